"""Put a bench folder's report into the docs: `ibau report` into docs/results/, and the table (with the
paper's "comparable or better than the best baseline" verdict per row) into docs/results.md between the
suite's `bench verdicts` markers, ``<!-- bench verdicts: written from docs/results/SUITE.md -->`` and
``<!-- end bench verdicts -->``. Models are never copied.

    python benchmarks/bench_results.py --runs runs/bench --suite one_trigger
    python benchmarks/bench_results.py --runs runs/bench --suite non_additive
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ibau.bench import build_report
from ibau.bench.aggregate import load_run, progress
from ibau.bench.tables import table_for

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs/bench"))
    ap.add_argument("--suite", default="one_trigger")
    args = ap.parse_args()
    dest = ROOT / "docs" / "results"
    if dest.exists():
        shutil.rmtree(dest)  # only generated files live there
    build_report(args.runs, dest)
    run = next(r for r in load_run(args.runs) if r["suite"]["name"] == args.suite)
    table = table_for(run).markdown().split("\n", 2)[2]  # drop the "### title" line
    p = progress(run)
    status = (f"{p.finished} of {p.cells} cells finished when this was generated; `pending` cells are still to run "
              f"(re-run the `ibau bench` command above: finished jobs are skipped)." if p.finished < p.cells else
              f"All {p.cells} cells finished.")
    doc = ROOT / "docs" / "results.md"
    start, end = f"<!-- bench verdicts: written from docs/results/{args.suite}.md -->", "<!-- end bench verdicts -->"
    body = doc.read_text()
    if start not in body:
        raise SystemExit(f"docs/results.md has no marker {start!r}; add it and {end!r} where the table belongs")
    head, _, rest = body.partition(start)
    tail = rest.split(end, 1)[1]
    doc.write_text(head + start + "\n" + status + "\n\n" + table + "\n" + end + tail)
    print(status)


if __name__ == "__main__":
    main()
