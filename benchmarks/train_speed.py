"""Training-step speed of the small VGG with channels-last against the default (contiguous) layout.

Times the two layouts side by side in one run (alternating blocks of steps, so machine noise hits both)
and prints the ratio; ``ibau.training.train_classifier`` trains channels-last for this reason.

    python benchmarks/train_speed.py [--threads 2] [--batch-size 128] [--blocks 5] [--steps 6]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ibau.models import build_model


def step_seconds(model, opt, x, y, steps: int) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=5, help="alternating timing blocks per layout")
    ap.add_argument("--steps", type=int, default=6, help="training steps per block")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))
    runs = {}
    for layout, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        model = build_model("small_vgg", num_classes=10, mean=[0.5] * 3, std=[0.25] * 3)
        model = model.to(memory_format=fmt).train()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        xs = x.contiguous(memory_format=fmt)
        step_seconds(model, opt, xs, y, 2)  # warm-up (oneDNN picks its kernels)
        runs[layout] = (model, opt, xs, [])
    for _ in range(args.blocks):
        for model, opt, xs, times in runs.values():
            times.append(step_seconds(model, opt, xs, y, args.steps))
    med = {k: statistics.median(v[3]) for k, v in runs.items()}
    print(f"small VGG, batch {args.batch_size}, {args.threads} thread(s), torch {torch.__version__}")
    for k, s in med.items():
        print(f"  {k:14s} {1000 * s:7.1f} ms/step  ({s / args.batch_size * 50000:6.1f} s per 50,000 images)")
    print(f"  channels_last speed-up: {med['contiguous'] / med['channels_last']:.2f}x")


if __name__ == "__main__":
    main()
