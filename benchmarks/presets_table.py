"""docs/presets.md's tables, generated from the records of benchmarks/compare_presets.py.

    python benchmarks/presets_table.py docs/measurements/issue15
    python benchmarks/presets_table.py docs/measurements/issue15 --names default,unbms,authors
    python benchmarks/presets_table.py docs/measurements/issue15 --doc   # the tables of docs/presets.md
    python benchmarks/presets_table.py docs/measurements/issue15 --write docs/presets.md   # ... written into it

Rows: one per (task, model tag, configuration), over its seeds (digits: split N with seed N, pooled):
held-out ACC and ASR after the last round
(mean ± std), the ACC drop against the model before the defense (mean and worst seed), the worst seed's
ASR, ‖δ‖, the share of δ's energy on the trigger's mask (evaluation only), seconds per round. Records of the
authors' own loop (``authors_loop/*.json``, run outside the project) are shown beside, where present.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

from ibau.bench.grid import RECORDED_DEFAULTS


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


#: docs/presets.md's tables: (task, configurations); tests/test_docs.py checks the doc shows them as generated.
#: The records of today's default (``IBAUConfig()`` with each task's rounds and, on digits, the demo's outer
#: step): `d15=default` ran the digits task's batch of 25 (the demo's), `d15b100=default,batch_size=100` the
#: default's own batch of 100 (the verdict's digits rows); tests/test_docs.py checks their configs.
DEFAULT_NAMES = ("d15", "d15b100")
#: Options added to IBAUConfig after some records were written, with the value that runs what those records ran:
#: the default's settings as src/ibau/bench/recorded_defaults.json lists them (the grid's rule for old records).
LATER_FIELDS = json.loads(RECORDED_DEFAULTS.read_text())["ibau"]["default"]
DOC_TABLES = {
    "authors": ("authors", {"authors", "reference", "refK0", "refsh", "refK2h20", "default", "unb", "unbpf05",
                            "unbpf20", "unbo2", "unbp2", "unbclamp", "unbclamppf20", "passes2", "p2pf20", "p2pf20r3"}),
    "authors_search": ("authors", {"l2c5", "l2c5pf50", "unbpf50", "l2p2pf50", "unbr3", "unbr5", "unbr5pf05",
                                   "unbr5pf05r3", "unbpatch", "unbpatch20", "unbpatch995", "unbpatch995o2",
                                   "unbpatch995lr3", "unbpatch995lr2", "unbpatchlr2r3", "unblr3", "unblr2"}),
    "digits": ("digits", {"default", "K0", "minres5", "unb", "unbms", "unbmsK0"}),
    "candidate_cifar": ("cifar", {"cand"}),
    "candidate_digits": ("digits", {"candp"}),
    "cifar": ("cifar", {"default", "unbms"}),
    "classes_authors": ("authors", {"unbpatchlr2r3", "candcls"}),
    "classes_cifar": ("cifar", {"candcos", "candcls"}),
    "classes_digits": ("digits", {"candpcls"}),
    "classes_digits_ms": ("digits", {"cpcls_ms20", "cpcls_ms0", "cpcls_lr1", "cpcls_ms20pf10", "cpcls_ms20b50",
                                     "d15w20"}),
    "new_default": (None, set(DEFAULT_NAMES)),
}
FOLDER = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "issue15"


def doc_tables(folder: Path = FOLDER) -> dict[str, str]:
    out = {}
    for key, (task, names) in DOC_TABLES.items():
        out[key] = table([r for r in rows(folder, names) if task is None or r["task"] == task])
    return out


def rows(folder: Path, names: set[str] | None = None) -> list[dict]:
    """One row per (task, model, configuration, rounds); digits splits are pooled (split N runs seed N)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for path in sorted(folder.rglob("*.json")):
        rec = json.loads(path.read_text())
        if "curve" in rec:
            if names is not None and rec["name"] not in names:
                continue
            tag = re.sub(r"_split\d+$", "", rec.get("tag", ""))
            groups[(rec["task"], tag, rec["name"], len(rec["curve"]))].append(rec)
        elif "rounds" in rec and "project" in rec and (names is None or "authors" in names):  # the authors' loop
            key = ("authors", "", "authors' loop" + (" + projection" if rec["project"] else ""), len(rec["rounds"]))
            groups[key].append({"seed": rec["seed"], "before": rec["before"], "curve": rec["rounds"],
                                "seconds_per_round": [r["seconds"] for r in rec["rounds"]]})
    out = []
    for (task, tag, name, rounds), recs in sorted(groups.items()):
        # the round whose model the run returned: the last, or the one its round probe chose
        last = [_kept(r) for r in recs]
        drops = [100 * (r["before"]["acc"] - c["acc"]) for r, c in zip(recs, last)]
        asr = [100 * c["asr"] for c in last]
        share = [c["trigger_share"] for c in last if c.get("trigger_share") is not None]
        out.append({"task": task, "tag": tag, "name": name, "rounds": rounds, "seeds": sorted(r["seed"] for r in recs),
                    "acc": _ms([100 * c["acc"] for c in last]), "asr": _ms(asr), "worst_asr": max(asr),
                    "drop": statistics.mean(drops), "worst_drop": max(drops),
                    "before": f"{statistics.mean(100 * r['before']['acc'] for r in recs):.2f} / "
                              f"{statistics.mean(100 * r['before']['asr'] for r in recs):.2f}",
                    "norm": statistics.mean(c["delta_norm"] for c in last),
                    "share": statistics.mean(share) if share else None,
                    "sec": statistics.mean(s for r in recs for s in r["seconds_per_round"]),
                    "threads": ",".join(sorted({str(r.get("threads", "?")) for r in recs}))})
    return out


def _kept(rec: dict) -> dict:
    """The metrics of the model the run returned: the last round's, the one its round probe or its accuracy
    guard chose, or the model as handed over (``selected_round`` 0: a selecting guard kept no round)."""
    sel = rec.get("selected_round")
    if sel == 0:
        return {**rec["before"], "delta_norm": 0.0, "trigger_share": None}
    return rec["curve"][(sel or len(rec["curve"])) - 1]


def table(items: list[dict]) -> str:
    lines = ["| task | model | configuration | rounds | seeds | before ACC / ASR % (mean) | ACC after % | ASR after % "
             "| worst ASR % | ACC drop (mean / worst) | ‖δ‖ | δ on trigger | s / round (threads) |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in items:
        share = "–" if r["share"] is None else f"{r['share']:.2f}"
        lines.append(f"| {r['task']} | {r['tag'] or '–'} | {r['name']} | {r['rounds']} | {','.join(map(str, r['seeds']))} "
                     f"| {r['before']} | {r['acc']} | {r['asr']} | {r['worst_asr']:.2f} "
                     f"| {r['drop']:.2f} / {r['worst_drop']:.2f} | {r['norm']:.1f} | {share} | {r['sec']:.1f} ({r['threads']}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--names", help="comma-separated configurations to show (\"authors\": the authors' loop)")
    ap.add_argument("--doc", action="store_true", help="print docs/presets.md's tables (DOC_TABLES)")
    ap.add_argument("--write", type=Path, help="replace each <!-- table:KEY --> ... <!-- /table --> block of this file")
    args = ap.parse_args()
    if args.write:
        text = args.write.read_text()
        for key, table_text in doc_tables(args.folder).items():
            block = re.compile(rf"<!-- table:{key} -->\n(?:(?!<!-- ).*\n)*<!-- /table -->")  # whole lines, no marker inside
            text = block.sub(lambda m, key=key, table_text=table_text: f"<!-- table:{key} -->\n{table_text}\n<!-- /table -->", text)
        args.write.write_text(text)
        return
    if args.doc:
        for key, text in doc_tables(args.folder).items():
            print(f"<!-- {key} -->\n{text}\n")
        return
    print(table(rows(args.folder, set(args.names.split(",")) if args.names else None)))


if __name__ == "__main__":
    main()
