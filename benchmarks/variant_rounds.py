"""A bench suite's I-BAU variants round by round, from the stored records only: one row per variant and defense
seed (held-out ASR after each round, the stamp each round used, the ACC drop and ASR at the end) and a summary per
variant (mean ± std over the finished seeds, the worst seed in brackets). docs/presets.md's stop-51 tables.

    python benchmarks/variant_rounds.py docs/measurements/issue17/cifar stop51_kept_cifar
    python benchmarks/variant_rounds.py docs/measurements/issue17/gtsrb stop51_kept_gtsrb --summary
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from ibau.bench.aggregate import load_run
from ibau.records import is_ok


def _ms(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{mean:.2f}{spread} ({max(values):.2f})"


def finished_cells(folder: Path, suite: str) -> list[dict]:
    """The suite's I-BAU cells of ``folder`` whose job finished, each with its record."""
    runs = [r for r in load_run(folder) if r["suite"]["name"] == suite]
    if not runs:
        raise SystemExit(f"{folder} holds no run of the suite {suite!r}")
    return [c for c in runs[0]["cells"] if c["method"] == "ibau" and is_ok(c["record"])]


def rounds_table(cells: list[dict]) -> str:
    lines = ["| variant | seed | held-out ASR % per round | stamp pixels per round | ACC drop | ASR % |",
             "|---|---:|---|---|---:|---:|"]
    for c in sorted(cells, key=lambda c: (c["variant"], c["seed"])):
        r = c["record"]
        asr = " → ".join(f"{100 * x['asr']:.1f}" for x in r["rounds"])
        stamps = " → ".join("–" if x.get("patch_pixels") is None else str(x["patch_pixels"]) for x in r["rounds"])
        drop = 100 * (r["before"]["acc"] - r["after"]["acc"])
        lines.append(f"| {c['variant'] or 'default'} | {c['seed']} | {asr} | {stamps} | {drop:.2f} | "
                     f"{100 * r['after']['asr']:.2f} |")
    return "\n".join(lines)


def summary_table(cells: list[dict]) -> str:
    lines = ["| variant | seeds | ASR % (worst) | ACC drop (worst) | defense s a run |", "|---|---:|---|---|---:|"]
    for variant in sorted({c["variant"] for c in cells}):
        records = [c["record"] for c in cells if c["variant"] == variant]
        asr = [100 * r["after"]["asr"] for r in records]
        drop = [100 * (r["before"]["acc"] - r["after"]["acc"]) for r in records]
        seconds = statistics.mean(r["defense_seconds"] for r in records)
        lines.append(f"| {variant or 'default'} | {len(records)} | {_ms(asr)} | {_ms(drop)} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="a folder written by `ibau bench`")
    ap.add_argument("suite", help="the suite's name (its manifest in FOLDER/suites)")
    ap.add_argument("--summary", action="store_true", help="the summary per variant instead of the rows")
    args = ap.parse_args()
    cells = finished_cells(args.folder, args.suite)
    print(summary_table(cells) if args.summary else rounds_table(cells))


if __name__ == "__main__":
    main()
