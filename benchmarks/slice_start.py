"""The held-back slice's clean accuracy before round 1 (``RoundRecord.guard_start``) for I-BAU bench records made
before it was recorded: the slice is ``guard_split`` of the job's clean set, drawn from the run's seed, so the
model as handed over is scored on the same images the run held back.

    python benchmarks/slice_start.py --folder docs/measurements/issue17/cifar --dataset npz --data-dir ../shared/data/cifar10.npz \
        RECORD.json [RECORD.json ...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ibau.metrics import accuracy
from ibau.pipeline.defend import load_for_dataset
from ibau.unlearn import IBAUConfig
from ibau.unlearn.guard import guard_split


def slice_start(folder: Path, record: dict, dataset: str, data_dir: str) -> float:
    model = folder / "models" / record["spec"]["train"] / "model.safetensors"
    net, _, clean, _ = load_for_dataset(model, dataset, data_dir, False, record["clean_size"], record["seed"])
    cfg = IBAUConfig(**{k: v for k, v in record["config"].items() if k in IBAUConfig.__dataclass_fields__})
    _, held_back = guard_split(len(clean.images), cfg)
    return accuracy(net, clean.images[held_back], clean.labels[held_back])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", type=Path, required=True, help="the bench folder (its models/ hold the jobs' models)")
    ap.add_argument("--dataset", required=True, help="the preset's dataset (npz for the cpu preset, gtsrb for cpu_gtsrb)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("records", nargs="+", type=Path)
    args = ap.parse_args()
    for path in args.records:
        record = json.loads(path.read_text())
        print(f"{path.name}: seed {record['seed']}, slice start {100 * slice_start(args.folder, record, args.dataset, args.data_dir):.1f}%")


if __name__ == "__main__":
    main()
