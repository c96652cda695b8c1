"""Let a bench folder use poisoned models already trained by `ibau attack` with the same recipe.

`ibau bench` trains every model of a suite itself. On 2 CPU cores that is ~1.5 hours for the 9 models of
one_trigger, which issue 3's `benchmarks/cifar_attacks.py` already trained with `ibau attack --preset
cpu` (same function, `ibau.pipeline.train.train_poisoned`, same arguments). This script copies such a model
into the bench folder as the result of a train job, but only when its card matches the job exactly:
dataset, architecture, training images, epochs, seed, poison ratio, attack name and all-to-all mode.
The train record says where the model came from (`adopted_from`).

    python benchmarks/adopt_models.py --suite one_trigger --preset cpu --source runs/cifar_attacks --out runs/bench
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from ibau.bench import expand, load_preset, load_suite
from ibau.bench.grid import TrainJob, _base_record, record_path
from ibau.records import write_record as write_json


def matches(job: TrainJob, card: dict) -> bool:
    meta = card.get("metadata", {})
    attack = meta.get("attack")
    if job.attack == "none":
        same_attack = attack is None
    else:
        same_attack = (attack is not None and attack.get("name") == job.attack
                       and bool(attack.get("all_to_all", False)) == job.all_to_all
                       and abs(meta.get("poison_ratio", -1) - job.poison_ratio) < 1e-12)
    return (same_attack and card.get("arch") == job.arch and meta.get("dataset") == job.dataset
            and meta.get("epochs") == job.epochs and meta.get("seed") == job.seed
            and (job.train_limit is None or meta.get("train_size") == job.train_limit))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--source", type=Path, required=True, help="folder of `ibau attack` run folders")
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    args = ap.parse_args()
    plan = expand(load_suite(args.suite), load_preset(args.preset))
    cards = {p.parent: json.loads(p.read_text()) for p in sorted(args.source.glob("*/model.json"))}
    jobs = ([plan.reference] if plan.reference else []) + plan.trains
    for job in jobs:
        if record_path(args.out, job.id).exists():
            print(f"{job.id}: already in {args.out}")
            continue
        found = [folder for folder, card in cards.items() if matches(job, card)]
        if not found:
            print(f"{job.id}: no matching model in {args.source}; `ibau bench` will train it")
            continue
        src, dest = found[0], args.out / "models" / job.id
        dest.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and f.name != "checkpoint.pt":
                shutil.copy2(f, dest / f.name)
        card = cards[src]
        record = {**_base_record(job.id, "train"), "spec": job.spec, "test": card["metadata"]["test"],
                  "train_size": card["metadata"]["train_size"], "seconds": 0.0, "adopted_from": str(src),
                  "adopted_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(record_path(args.out, job.id), record)
        print(f"{job.id}: adopted {src}")


if __name__ == "__main__":
    main()
