"""Table of the GPU sweep of I-BAU settings on the CIFAR-10 all-to-all models (docs/results.md, issue 3).

    python benchmarks/a2a_sweep_table.py

Reads docs/measurements/cifar_attacks/a2a_gpu_sweep/summary.json (made from the ``metrics.json`` of each
``ibau defend`` run of that folder's sweep.sh and jobs*.txt) and prints one row per setting: for each
model, the held-out ACC drop and ASR after the last round, and whether both issue-3 conditions hold.
"""
from __future__ import annotations

import json
from pathlib import Path

SUMMARY = Path(__file__).resolve().parents[1] / "docs" / "measurements" / "cifar_attacks" / "a2a_gpu_sweep" / "summary.json"
MODELS = ("p4", "p5", "rerun")


def cell(run: dict) -> tuple[str, bool]:
    drop = 100 * (run["before"]["acc"] - run["after"]["acc"])
    asr = 100 * run["after"]["asr"]
    ok = drop <= 5 and asr <= 20
    return f"{drop:.2f} / {asr:.2f}{'' if ok else ' ✗'}", ok


def table(runs: list[dict]) -> str:
    by_setting: dict[tuple, dict[str, dict]] = {}
    for run in runs:
        key = (run["sweep"], run["setting"], run["method"], run["rounds"], " ".join(run["options"]))
        by_setting.setdefault(key, {})[run["model"]] = run
    head = ("| sweep | method | rounds | options | " + " | ".join(f"{m}: ACC drop / ASR %" for m in MODELS)
            + " | all three meet |")
    rows = [head, "|" + "---|" * (len(MODELS) + 5)]
    for (sweep, _, method, rounds, options), models in sorted(by_setting.items()):
        cells, oks = [], []
        for m in MODELS:
            text, ok = cell(models[m]) if m in models else ("–", False)
            cells.append(text)
            oks.append(ok)
        rows.append(f"| {sweep} | {method} | {rounds or '10 epochs'} | `{options or 'default'}` | "
                    + " | ".join(cells) + f" | {'yes' if all(oks) else 'no'} |")
    return "\n".join(rows)


def main() -> None:
    data = json.loads(SUMMARY.read_text())
    print(table(data["runs"]))


if __name__ == "__main__":
    main()
