"""What computing I-BAU's pseudo-labels once a round saves, side by side in one run (issue 20 §3).

Before: every δ step predicted its own batch (``torch.no_grad``), every δ search of a round again, and the
stamp predicted its 1,000 scoring images once more. Now the round predicts the clean set once
(:func:`ibau.unlearn.core.predictions`) and the searches and the stamp share it. Both ways are timed in
turn, ``--repeats`` times, on the same model and clean set; the labels are checked equal.

    python benchmarks/pseudo_labels.py --npz ../shared/data/cifar10.npz --model M/model.safetensors --searches 1 2
"""
from __future__ import annotations

import argparse
import time

import torch

from ibau.data import defender_split, load_npz
from ibau.models import load_model
from ibau.training import iterate_batches
from ibau.unlearn.core import FOOLING_SAMPLE, predictions


def per_step(model, x, y, searches: int, batch_size: int = 100) -> torch.Tensor:
    """The old way: each search's batches predicted one by one, then the stamp's images."""
    for s in range(searches):
        for xb, _ in iterate_batches(x, y, batch_size, torch.Generator().manual_seed(s)):
            with torch.no_grad():
                model(xb).argmax(1)
    with torch.no_grad():
        return model(x[:FOOLING_SAMPLE]).argmax(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--searches", type=int, nargs="+", default=[1, 2], help="δ searches a round (2: bounded_search)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    _, test = load_npz(args.npz, train_limit=1)
    clean, _ = defender_split(test, args.clean_size, seed=0)
    model = load_model(args.model)[0].eval()
    x, y = clean.images, clean.labels
    print(f"{torch.get_num_threads()} threads, {len(x)} clean images")
    for searches in args.searches:
        old, new = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            stamp = per_step(model, x, y, searches)
            old.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            labels = predictions(model, x)
            new.append(time.perf_counter() - t0)
            assert torch.equal(labels[:FOOLING_SAMPLE], stamp), "the two ways predicted different labels"
        print(f"{searches} search(es) a round: per step {min(old):.2f} s, once a round {min(new):.2f} s "
              f"(saves {min(old) - min(new):.2f} s a round; best of {args.repeats})")


if __name__ == "__main__":
    main()
