"""ANP's pruning threshold, seen from both sides: what the defender's search chose on its clean set, and what
each threshold does to held-out ACC/ASR (evaluation only: the triggered images no defender has).

BackdoorBench sweeps the thresholds 0, 0.05, …, 0.9 and keeps the one with the lowest ASR on triggered test
images among those within 10% of the clean accuracy; ``prune_by="search"`` keeps the largest threshold before
the clean set's accuracy first falls that far. This prints, per threshold, the neurons pruned, the clean-set
accuracy, the held-out ACC/ASR, and marks the two choices, so a reader sees whether ANP's masks can remove the
backdoor at all on a model (some threshold reaches a low ASR) and what the oracle's choice is worth.

It reads the final masks from a record of ``anp`` (``details.masks``: a grid record, or one of
``benchmarks/time_to_effect.py``) and the poisoned model (a folder made by ``ibau attack`` or the grid, with its
trigger.json; or a model file whose card names its trigger), split as ``ibau defend`` splits (seed 0):

    python benchmarks/anp_thresholds.py --npz ../shared/data/gtsrb.npz \\
        --record docs/measurements/issue17/gtsrb/records/defend-anp-badnets-...json \\
        --model docs/measurements/issue17/gtsrb/models/train-badnets-r0.2-s0-9f1ae56f
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from ibau.attacks.io import load_trigger
from ibau.data import defender_split, load_npz
from ibau.defenses.anp import neuron_layers, pruned_neurons, search_threshold, zero_scales
from ibau.metrics import accuracy, evaluate
from ibau.models import load_model
from ibau.pipeline.defend import trigger_for


def table(sweep: dict) -> str:
    """The markdown table of a sweep written by ``--out`` (docs/baselines.md quotes it)."""
    b = sweep["before"]
    lines = [f"Before: held-out ACC {100 * b['acc']:.2f} / ASR {100 * b['asr']:.2f} %; clean-set ACC "
             f"{100 * sweep['clean_acc']:.2f} %.", "",
             "| threshold | neurons pruned | clean-set ACC % | held-out ACC % | held-out ASR % | chosen by |",
             "|---:|---:|---:|---:|---:|---|"]
    for r in sweep["rows"]:
        who = [name for name, t in (("the search", sweep["search"]), ("BackdoorBench (test set)", sweep["oracle"]))
               if t == r["threshold"]]
        lines.append(f"| {r['threshold']:.2f} | {r['pruned']} | {100 * r['clean_acc']:.2f} | {100 * r['acc']:.2f} | "
                     f"{100 * r['asr']:.2f} | {', '.join(who)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="print the markdown table of a sweep written by --out, and stop")
    ap.add_argument("--npz", help="the dataset's npz (its test split is divided as the grid does)")
    ap.add_argument("--record", help="a record of anp (its details hold the masks)")
    ap.add_argument("--model", help="the poisoned model's folder (model.safetensors, trigger.json) "
                    "or a model file whose card names its trigger")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--max-threshold", type=float, default=0.9)
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--acc-ratio", type=float, default=0.1)
    ap.add_argument("--out", help="write the sweep here as JSON")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if not (args.npz and args.record and args.model):
        ap.error("--npz, --record and --model are needed (or --table FILE)")
    record = json.loads(Path(args.record).read_text())
    masks = record["details"]["masks"]
    path = Path(args.model)
    model, card = load_model(path / "model.safetensors" if path.is_dir() else path)
    trigger = load_trigger(path / "trigger.json") if path.is_dir() else trigger_for(card, None)
    _, test = load_npz(args.npz, train_limit=1)
    clean, held = defender_split(test, args.clean_size, seed=0)
    layers = neuron_layers(model)
    mask = torch.tensor([v for name, _ in layers for v in masks[name]])
    chosen, search = search_threshold(model, layers, mask, clean, args.max_threshold, args.step, args.acc_ratio)
    base = search["clean_acc"]
    before = evaluate(model, held.images, held.labels, trigger, card.num_classes)
    scored = {r["threshold"]: r["clean_acc"] for r in search["sweep"]}  # the search stops early: score the rest
    rows = []
    for k in range(int(args.max_threshold / args.step + 1e-9) + 1):
        t = round(k * args.step, 10)
        pruned = copy.deepcopy(model)
        index = pruned_neurons(mask, "threshold", t, 0.0)
        zero_scales(neuron_layers(pruned), index)
        m = evaluate(pruned, held.images, held.labels, trigger, card.num_classes)
        clean_acc = scored[t] if t in scored else accuracy(pruned, clean.images, clean.labels)
        rows.append({"threshold": t, "pruned": int(len(index)), "clean_acc": clean_acc, "acc": m["acc"], "asr": m["asr"]})
    # BackdoorBench's choice: the lowest ASR among the thresholds within the tolerance of the test set's ACC
    within = [r for r in rows if (before["acc"] - r["acc"]) / before["acc"] < args.acc_ratio]
    oracle = min(within, key=lambda r: r["asr"])["threshold"] if within else None
    print(f"before: held-out ACC {100 * before['acc']:.2f} ASR {100 * before['asr']:.2f}; clean-set ACC {100 * base:.2f}; "
          f"{len(mask)} neurons")
    print(f"{'threshold':>9} {'pruned':>6} {'clean ACC':>9} {'held ACC':>8} {'ASR':>6}")
    for r in rows:
        mark = ("  <- search" if r["threshold"] == chosen else "") + ("  <- oracle (BackdoorBench)" if r["threshold"] == oracle else "")
        print(f"{r['threshold']:9.2f} {r['pruned']:6d} {100 * r['clean_acc']:9.2f} {100 * r['acc']:8.2f} {100 * r['asr']:6.2f}{mark}")
    if args.out:
        out = {"record": record.get("id", Path(args.record).name), "before": before, "clean_acc": base,
               "search": chosen, "oracle": oracle, "rows": rows,
               "metrics": "held-out ACC/ASR (SPEC §4), evaluation only"}
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")

if __name__ == "__main__":
    main()
