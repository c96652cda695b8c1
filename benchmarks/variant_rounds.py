"""A bench suite's I-BAU variants round by round, from the stored records only: one row per variant and defense
seed (held-out ASR after each round, the stamp each round used, the ACC drop and ASR at the end) and a summary per
variant (mean ± std over the finished seeds, the worst seed in brackets); ``--classes`` adds where each round's δ sent
the clean images (its top class and the share of them; a defender's diagnostic, from the records' fooling rates).
docs/presets.md's stop-51 to stop-55 tables.

    python benchmarks/variant_rounds.py docs/measurements/issue17/cifar stop51_kept_cifar
    python benchmarks/variant_rounds.py docs/measurements/issue17/gtsrb stop51_kept_gtsrb --summary
    python benchmarks/variant_rounds.py docs/measurements/issue19/confirm/gtsrb confirm_kept_gtsrb --classes
    python benchmarks/variant_rounds.py docs/measurements/issue17/gtsrb stop53_l1kept_gtsrb --classes --stamp-classes
    python benchmarks/variant_rounds.py docs/measurements/issue17/gtsrb stop55_blend_dev_gtsrb --blend
    python benchmarks/variant_rounds.py docs/measurements/issue17/cifar stop59_also_dev_cifar --triggers
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ibau.bench.aggregate import load_run
from ibau.records import is_ok


def _ms(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{mean:.2f}{spread} ({max(values):.2f})"


def finished_cells(folder: Path, suite: str) -> list[dict]:
    """The suite's I-BAU cells of ``folder`` whose job finished, each with its record and its trigger's target."""
    runs = [r for r in load_run(folder) if r["suite"]["name"] == suite]
    if not runs:
        raise SystemExit(f"{folder} holds no run of the suite {suite!r}")
    cells = [c for c in runs[0]["cells"] if c["method"] == "ibau" and is_ok(c["record"])]
    rows = {c["attack_label"] for c in cells}
    for c in cells:  # a suite of several rows names each cell's row beside its variant
        c["name"] = (c["variant"] or "default") + (f", {c['attack_label']}" if len(rows) > 1 else "")
    for c in cells:  # the trigger's target, for the eye only: the model's trigger card (none for a clean model)
        card = folder / "models" / c["train"] / "trigger.json"
        c["target"] = json.loads(card.read_text()).get("target") if card.exists() else None
    return cells


def _top_class(fooling: list[float]) -> str:
    """``class (share %)`` of the class δ sent most clean images to."""
    top = max(range(len(fooling)), key=fooling.__getitem__)
    return f"{top} ({100 * fooling[top]:.0f}%)"


def _stamp(row: dict, stamp_classes: bool) -> str:
    """A round's stamp: its pixels (– for none); ``stamp_classes``: with the class whose search gave it (``c2``)."""
    if row.get("patch_pixels") is None:
        return "–"
    searched = stamp_classes and row.get("patch_class") is not None
    return f"{row['patch_pixels']}" + (f" c{row['patch_class']}" if searched else "")


def _blended(row: dict) -> str:
    """A round's blended pattern (blend_search): ``class (share %)`` it sends the clean images to, – for none;
    with blend_gate, round 1's screen pick that was not carried reads ``gated: class (share %)``, later rounds –; the
    further classes of blend_also follow as `` + class (share %)``."""
    if row.get("blend_class") is None or row.get("blend_fooling") is None:
        return "–"
    found = f"{row['blend_class']} ({100 * row['blend_fooling']:.0f}%)"
    for c, rate in zip(row.get("blend_also") or [], row.get("blend_also_fooling") or []):  # blend_also's classes
        found += f" + {c} ({100 * rate:.0f}%)"
    return f"gated: {found}" if row.get("blend_gated") else found


def _slice(record: dict) -> str:
    """The held-back slice's clean accuracy (acc_guard, blend_stop): ``start: round 1 → round 2 …``, a round
    whose θ steps carried no pattern because blend_stop ended it marked ``·``; – where no slice was held back."""
    rows = record["rounds"]
    if not rows or rows[-1].get("guard_acc") is None:
        return "–"
    start = rows[-1].get("guard_start")
    head = "?" if start is None else f"{100 * start:.1f}"
    return head + ": " + " → ".join(f"{100 * x['guard_acc']:.1f}" + ("·" if x.get("blend_stopped") else "")
                                    for x in rows if x.get("guard_acc") is not None)


def rounds_table(cells: list[dict], classes: bool = False, stamp_classes: bool = False, blend: bool = False,
                 held_back: bool = False) -> str:
    """One row per variant and seed; ``classes``: with δ's top class per round (and the trigger's target);
    ``stamp_classes``: each stamp with the class whose targeted search gave it (none: δ's own stamp); ``blend``:
    with the class of each round's blended pattern and the share of the clean images it sends there;
    ``held_back``: with the held-back slice's clean accuracy, before round 1 and after each round."""
    extra = (" δ's class per round (target) |" if classes else "") + (" blended pattern's class per round |"
                                                                       if blend else "")
    extra += " held-back slice ACC %: start: per round (· no pattern) |" if held_back else ""
    lines = [f"| variant | seed | held-out ASR % per round | stamp pixels per round |{extra} ACC drop | ASR % |",
             "|---|---:|---|---|" + ("---|" if classes else "") + ("---|" if blend else "")
             + ("---|" if held_back else "") + "---:|---:|"]
    for c in sorted(cells, key=lambda c: (c["name"], c["seed"])):
        r = c["record"]
        asr = " → ".join(f"{100 * x['asr']:.1f}" for x in r["rounds"])
        stamps = " → ".join(_stamp(x, stamp_classes) for x in r["rounds"])
        where = ""
        if classes:
            target = "?" if c.get("target") is None else c["target"]
            where = " " + " → ".join(_top_class(x["fooling"]) for x in r["rounds"]) + f" ({target}) |"
        if blend:
            where += " " + " → ".join(_blended(x) for x in r["rounds"]) + " |"
        if held_back:
            where += f" {_slice(r)} |"
        drop = 100 * (r["before"]["acc"] - r["after"]["acc"])
        lines.append(f"| {c['name']} | {c['seed']} | {asr} | {stamps} |{where} {drop:.2f} | "
                     f"{100 * r['after']['asr']:.2f} |")
    return "\n".join(lines)


def summary_table(cells: list[dict]) -> str:
    lines = ["| variant | seeds | ASR % (worst) | ACC drop (worst) | defense s a run |", "|---|---:|---|---|---:|"]
    for name in sorted({c["name"] for c in cells}):
        records = [c["record"] for c in cells if c["name"] == name]
        asr = [100 * r["after"]["asr"] for r in records]
        drop = [100 * (r["before"]["acc"] - r["after"]["acc"]) for r in records]
        seconds = statistics.mean(r["defense_seconds"] for r in records)
        lines.append(f"| {name} | {len(records)} | {_ms(asr)} | {_ms(drop)} | {seconds:.0f} |")
    return "\n".join(lines)


def triggers_table(cells: list[dict]) -> str:
    """A multi-trigger row's ASR per trigger after the defense (``asr:NAME`` of the record), one row per variant
    and seed, with the mean over the triggers (the row's ASR) and the ACC drop; the cells without per-trigger
    ASR are left out."""
    cells = [c for c in cells if any(k.startswith("asr:") for k in c["record"]["after"])]
    names = [k[4:] for k in cells[0]["record"]["after"] if k.startswith("asr:")] if cells else []
    lines = ["| variant | seed | " + " | ".join(names) + " | mean ASR % | ACC drop |",
             "|---|---:|" + "---:|" * (len(names) + 2)]
    for c in sorted(cells, key=lambda c: (c["name"], c["seed"])):
        after, before = c["record"]["after"], c["record"]["before"]
        each = " | ".join(f"{100 * after[f'asr:{n}']:.1f}" for n in names)
        lines.append(f"| {c['name']} | {c['seed']} | {each} | {100 * after['asr']:.2f} | "
                     f"{100 * (before['acc'] - after['acc']):.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a folder written by `ibau bench`")
    ap.add_argument("suite", help="the suite's name (its manifest in FOLDER/suites)")
    ap.add_argument("--summary", action="store_true", help="the summary per variant instead of the rows")
    ap.add_argument("--classes", action="store_true", help="the rows with δ's top class per round")
    ap.add_argument("--stamp-classes", action="store_true",
                    help="each stamp with the class whose search gave it (c2: class 2's; none: δ's own)")
    ap.add_argument("--blend", action="store_true",
                    help="the rows with each round's blended pattern (blend_search): its class and rate")
    ap.add_argument("--held-back", action="store_true",
                    help="the rows with the held-back slice's clean accuracy per round (acc_guard, blend_stop)")
    ap.add_argument("--triggers", action="store_true",
                    help="a multi-trigger row's ASR per trigger after the defense, instead of the rows per round")
    args = ap.parse_args()
    cells = finished_cells(args.folder, args.suite)
    if args.triggers:
        print(triggers_table(cells))
        return
    print(summary_table(cells) if args.summary
          else rounds_table(cells, args.classes, args.stamp_classes, args.blend, args.held_back))


if __name__ == "__main__":
    main()
