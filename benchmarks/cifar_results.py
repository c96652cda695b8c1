"""Collect the records of benchmarks/cifar_attacks.py and write the issue-3 table (docs/results.md).

    python benchmarks/cifar_results.py --runs runs/cifar_attacks            # copy records, write table
    python benchmarks/cifar_results.py                                      # table from the copied records

Records are copied to docs/measurements/cifar_attacks/<run>/{attack,ibau}.json; the table is generated
from those files only, so it can be rebuilt without the models.
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict
from pathlib import Path

from ibau.bench.paper import TABLE1
from ibau.unlearn.config import IBAUConfig

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "measurements" / "cifar_attacks"

#: Run folder -> table row; the first eight are the rows of the paper's Table 1 (:data:`ibau.bench.paper.TABLE1`).
LABELS = {"badnets": "BadNets", "blend": "Blend", "l0_inv": "ℓ0 inv", "l2_inv": "ℓ2 inv", "smooth": "Smooth",
          "trojan_sq": "Trojan SQ", "trojan_wm": "Trojan WM", "all_to_all": "all-to-all",
          "all_to_all_24": "all-to-all, 24 epochs", "all_to_all_50k": "all-to-all, 50,000 images, 20 epochs",
          "all_to_all_cos30": "all-to-all, 30 epochs, cosine lr",
          "all_to_all_aug50k": "all-to-all, 50,000 images, 20 epochs, cosine lr, flip+crop",
          "all_to_all_p4": "all-to-all, 40% poison, 50,000 images, 20 epochs, cosine lr",
          "all_to_all_p5": "all-to-all, 50% poison, 50,000 images, 20 epochs, cosine lr",
          "rerun_all_to_all_p4": "all-to-all, 40% poison (the same command rerun with the final code)",
          "all_to_all_p4_seed1": "all-to-all, 40% poison, --seed 1"}


def is_all_to_all(name: str) -> bool:
    return "all_to_all" in name


def paper(name: str):
    """The paper's Table 1 numbers for a run, ((ACC, ASR) without defense, (ACC, ASR) after I-BAU), CIFAR-10,
    small VGG (:data:`ibau.bench.paper.TABLE1`). Every all-to-all variant is compared with the paper's one
    all-to-all model."""
    row = TABLE1[LABELS["all_to_all" if is_all_to_all(name) else name]]
    return row["none"], row["ibau"]


def collect(runs: Path) -> None:
    for run in sorted(p for p in runs.iterdir() if (p / "metrics.json").exists()):
        dest = RECORDS / run.name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "metrics.json", dest / "attack.json")
        if (run / "ibau" / "metrics.json").exists():
            shutil.copy(run / "ibau" / "metrics.json", dest / "ibau.json")
    for log in runs.glob("commands*.log"):
        shutil.copy(log, RECORDS / log.name)


def load(name: str, kind: str) -> dict | None:
    path = RECORDS / name / f"{kind}.json"
    return json.loads(path.read_text()) if path.exists() else None


def settings(config: dict) -> str:
    """The I-BAU options of a record that differ from the default preset of the release that made it
    (``ibau presets default`` for today's) other than the round count, as ``--defense-option`` text;
    empty for the default."""
    default = asdict(IBAUConfig())
    skip = {"rounds", "seed", "device"}
    if "min_steps" not in config:
        # a record made before issue 15: compared with the default of its day (ℓ2 ball, one pass a round)
        default = asdict(IBAUConfig(norm="l2", min_steps=0, patch_threshold=0.0, patch_search="delta", outer_lr=1e-3,
                                    outer_lr_schedule="constant"))
        if config.get("solver") == "fixed_point":  # it counted fixed-point iterations from v0 = b: K + 1 today
            config = {**config, "solver_iters": config["solver_iters"] + 1}
    diff = [f"{k}={v}" for k, v in config.items() if k in default and k not in skip and v != default[k]]
    return (", " + " ".join(diff)) if diff else ""


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def table() -> str:
    clean = load("clean", "attack")
    clean_acc = clean["test"]["acc"] if clean else None
    rows = ["| attack | test ACC % (Δ vs clean) | test ASR % | held-out ACC / ASR % before | after I-BAU ACC / ASR % "
            "| ACC drop | train s | I-BAU s (rounds, non-default options) | paper: none → I-BAU (ACC/ASR) | meets issue 3 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, label in LABELS.items():
        att, dfd = load(name, "attack"), load(name, "ibau")
        if att is None:
            rows.append(f"| {label} | not run yet | | | | | | | | |")
            continue
        acc, asr = att["test"]["acc"], att["test"].get("asr")
        gap = None if clean_acc is None else 100 * (acc - clean_acc)
        one_to_one = not is_all_to_all(name)
        # issue 3: one-to-one ASR >= 95% within 3 ACC points of the clean model; all-to-all ASR >= 70%
        ok = [asr is not None and asr >= (0.95 if one_to_one else 0.70)]
        if one_to_one:
            ok.append(gap is not None and gap >= -3)
        cells = [label, f"{pct(acc)} ({gap:+.2f})" if gap is not None else pct(acc), pct(asr)]
        if dfd is not None:
            b, a = dfd["before"], dfd["after"]
            drop = 100 * (b["acc"] - a["acc"])
            ok += [a["asr"] <= 0.20, drop <= 5]
            cells += [f"{pct(b['acc'])} / {pct(b['asr'])}", f"{pct(a['acc'])} / {pct(a['asr'])}", f"{drop:.2f}",
                      f"{att['seconds']:.0f}",
                      f"{dfd['seconds']['defense']:.0f} ({len(dfd['rounds'])}{settings(dfd.get('config', {}))})"]
        else:
            ok.append(False)
            cells += ["–", "not run yet", "–", f"{att['seconds']:.0f}", "–"]
        (pa, ps), (qa, qs) = paper(name)
        cells += [f"{pa:.2f}/{ps:.2f} → {qa:.2f}/{qs:.2f}", "yes" if all(ok) else "**no**"]
        rows.append("| " + " | ".join(cells) + " |")
    head = f"Clean model by the same recipe: test ACC {pct(clean_acc)}%." if clean else "Clean model: not run yet."
    return head + "\n\n" + "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=None, help="benchmarks/cifar_attacks.py output to copy records from")
    ap.add_argument("--print", action="store_true", help="only print the table")
    args = ap.parse_args()
    if args.runs is not None:
        collect(args.runs)
    text = table()
    print(text)
    if not args.print:
        doc = ROOT / "docs" / "results.md"
        marker = "<!-- table: generated by benchmarks/cifar_results.py -->"
        body = doc.read_text() if doc.exists() else marker + "\n"
        before, _, rest = body.partition(marker)
        after = rest.split("<!-- end table -->", 1)[1] if "<!-- end table -->" in rest else ""
        doc.write_text(before + marker + "\n" + text + "<!-- end table -->" + after)


if __name__ == "__main__":
    main()
