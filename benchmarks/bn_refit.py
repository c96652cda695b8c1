"""BatchNorm statistics refitted on the defender's clean set, alone (issue 19 part 3, a mechanism of the list).

A poisoned model's BatchNorm running statistics were estimated on its training set, poisoned images included.
Re-estimating them on the defender's clean images (train-mode forward passes without gradients, a cumulative
average, no weight changes) is the cheapest purification one can try. This script measures what it does on its
own to held-out ACC and ASR, for every poisoned model of the given bench folders' ``models/``.

    python benchmarks/bn_refit.py --npz ../shared/data/gtsrb.npz --dataset gtsrb \
        --models docs/measurements/issue17/gtsrb/models --held 2000 --out docs/measurements/issue19/bn_refit/gtsrb.json

``--table FILE...`` prints the records as one markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn


def refit_batchnorm(model: nn.Module, images: torch.Tensor, batch_size: int = 100) -> int:
    """Replace every BatchNorm layer's running mean and variance by their average over ``images`` (train-mode
    forward passes, no gradient; the affine weights are not touched). Returns the number of layers refitted."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not an exponential one
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    model.train(was_training)
    return len(layers)


def measure(path: Path, dataset: str, npz: str, clean_size: int, held_size: int | None, seed: int) -> dict:
    from ibau.data.arrays import ImageSet
    from ibau.metrics import evaluate
    from ibau.pipeline.defend import load_for_dataset, trigger_for

    net, card, clean, held = load_for_dataset(path / "model.safetensors", dataset, npz, False, clean_size, seed)
    if held_size is not None:
        held = ImageSet(held.images[:held_size], held.labels[:held_size])
    trigger = trigger_for(card, None)
    net.eval()
    before = evaluate(net, held.images, held.labels, trigger, card.num_classes)
    start = time.perf_counter()
    layers = refit_batchnorm(net, clean.images)
    seconds = time.perf_counter() - start
    net.eval()
    after = evaluate(net, held.images, held.labels, trigger, card.num_classes)
    return {"model": path.name, "layers": layers, "clean": len(clean), "held": len(held), "seed": seed,
            "before": before, "after": after, "refit_seconds": seconds}


def table(files: list[Path]) -> str:
    lines = ["| model | BatchNorm layers | before ACC / ASR % | BN refitted ACC / ASR % | refit s |", "|---|---:|---|---|---:|"]
    for f in files:
        for r in json.loads(f.read_text())["rows"]:
            b, a = r["before"], r["after"]
            lines.append(f"| {f.stem} {r['model']} | {r['layers']} | {100 * b['acc']:.1f} / {100 * b['asr']:.1f} | "
                         f"{100 * a['acc']:.1f} / {100 * a['asr']:.1f} | {r['refit_seconds']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", help="the dataset file (cifar10.npz, gtsrb.npz)")
    ap.add_argument("--dataset", default="npz", help="npz (CIFAR-10) or gtsrb")
    ap.add_argument("--models", type=Path, help="a bench folder's models/ (every train-* folder but the clean one)")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--held", type=int, default=None, help="score on the first N held-out images (default all)")
    ap.add_argument("--seed", type=int, default=0, help="the clean-set draw")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path, nargs="+", help="print these records as a markdown table and exit")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not (args.npz and args.models and args.out):
        sys.exit("error: give --npz, --models and --out (or --table FILE...)")
    torch.set_num_threads(args.threads)
    rows = []
    for path in sorted(p for p in args.models.glob("train-*") if not p.name.startswith("train-none")):
        rows.append(measure(path, args.dataset, args.npz, args.clean_size, args.held, args.seed))
        r = rows[-1]
        print(f"{r['model']}: {100 * r['before']['acc']:.1f}/{100 * r['before']['asr']:.1f} -> "
              f"{100 * r['after']['acc']:.1f}/{100 * r['after']['asr']:.1f}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"held": args.held, "threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
