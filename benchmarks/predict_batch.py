"""Evaluation batch size: seconds to predict held-out images in batches of 512 and of 100, side by side in one run,
and whether the predictions are the same (``ibau.metrics.predict``'s default is 100).

    OMP_NUM_THREADS=1 python benchmarks/predict_batch.py --model MODEL.safetensors --npz ../shared/data/cifar10.npz
"""
from __future__ import annotations

import argparse
import time

import torch

from ibau.data.npz import load_npz
from ibau.metrics import predict
from ibau.models.io import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--npz", required=True, help="a dataset .npz (its test split is predicted)")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    model, _ = load_model(args.model)
    x = load_npz(args.npz, train_limit=1)[1].images[:args.images]
    best: dict[int, float] = {}
    preds: dict[int, torch.Tensor] = {}
    for _ in range(args.repeats):  # alternate, so a change of load hits both alike
        for batch in (512, 100):
            t0 = time.perf_counter()
            preds[batch] = predict(model, x, batch_size=batch)
            best[batch] = min(best.get(batch, float("inf")), time.perf_counter() - t0)
    print(f"{len(x)} images, {torch.get_num_threads()} thread(s), best of {args.repeats}: batches of 512 "
          f"{best[512]:.2f} s, of 100 {best[100]:.2f} s ({best[512] / best[100]:.2f}x); same predictions: "
          f"{torch.equal(preds[512], preds[100])}")


if __name__ == "__main__":
    main()
