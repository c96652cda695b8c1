"""What the class search sees on a model: for every class, the default's sparse targeted δ
(:func:`ibau.unlearn.inner.targeted_delta`, ``patch_steps`` steps, ℓ1 weight ``patch_l1``) and the rate of
its stamp at every size of :data:`ibau.unlearn.inner.PATCH_SIZES`, on the defender's clean images.

Written to decide the class search's rule from data (issue 19 part 3): the default looks for a stamp that
sends 99.5% of clean images to one class, and a GTSRB BadNets model whose own trigger reaches 96.5% has
none, so the 43-class search runs every round for nothing. A rule that does not know the attack's ASR must
tell the target's stamp from the other classes' at the same size; this prints what each class reaches.

    python benchmarks/class_stamps.py --model docs/measurements/issue17/gtsrb/models/train-badnets-r0.2-s0-9f1ae56f/model.safetensors \\
        --dataset gtsrb --data-dir ../shared/data/gtsrb.npz --target 8 --out docs/measurements/issue19/class_stamps/gtsrb_badnets.json

``--target`` only marks the attack's class in the output (the evaluator's knowledge); nothing is chosen from it.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ibau import IBAUConfig
from ibau.pipeline.defend import load_for_dataset
from ibau.training import iterate_batches
from ibau.unlearn.core import FOOLING_SAMPLE
from ibau.unlearn.inner import PATCH_SIZES, targeted_delta


def stamp_rates(net, x: torch.Tensor, delta: torch.Tensor, num_classes: int, sizes=PATCH_SIZES,
                cap: bool = True) -> list[dict]:
    """For each size k, the stamp of δ's k strongest pixels (as delta_patch builds it): the class it sends
    most other-class images to, and that share. ``cap``: stop at 1/16 of the image, as the default's stamp does."""
    energy = delta.pow(2).sum(0).flatten()
    order = energy.argsort(descending=True)
    pattern = (delta > 0).to(x.dtype)
    rows = []
    with torch.no_grad():
        before = net(x).argmax(1)
        for k in sizes:
            if cap and k > energy.numel() // 16:
                break
            mask = torch.zeros_like(energy)
            mask[order[:k]] = 1
            mask = mask.view(1, *delta.shape[1:])
            after = net((1 - mask) * x + mask * pattern).argmax(1)
            best = (0.0, -1)
            for c in range(num_classes):
                others = before != c
                if others.any():
                    best = max(best, (float((after[others] == c).float().mean()), c))
            rows.append({"pixels": k, "rate": round(best[0], 4), "class": best[1]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--arch", default=None, help="for model files without a card (the authors' checkpoint)")
    ap.add_argument("--target", type=int, required=True, help="the attack's target class (marks the output only)")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0, help="batch order of the searches")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default=None,
                    help="comma-separated stamp sizes in pixels, beyond the default's cap of 1/16 of the image "
                         f"(default: {','.join(map(str, PATCH_SIZES))}, capped)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    net, card, clean, _ = load_for_dataset(args.model, args.dataset, args.data_dir, False, args.clean_size, 0, args.arch)
    net.eval()
    cfg = IBAUConfig()
    x, y = clean.images, clean.labels
    gen = torch.Generator().manual_seed(args.seed)

    def batches():
        return iterate_batches(x, y, cfg.batch_size, gen, shuffle=True)

    xs = x[:FOOLING_SAMPLE]
    sizes = PATCH_SIZES if args.sizes is None else tuple(int(k) for k in args.sizes.split(","))
    classes = []
    for c in range(card.num_classes):
        t0 = time.perf_counter()
        delta = targeted_delta(net, batches, x[0], c, cfg, cfg.patch_steps)
        rows = stamp_rates(net, xs, delta, card.num_classes, sizes, cap=args.sizes is None)
        classes.append({"class": c, "l1": round(float(delta.abs().sum()), 2), "stamps": rows,
                        "seconds": round(time.perf_counter() - t0, 1)})
        line = " ".join(f"{r['pixels']}:{r['rate']:.2f}" + ("" if r["class"] == c else f"→{r['class']}") for r in rows)
        print(f"class {c:2d}{' (target)' if c == args.target else '         '} ‖δ‖₁ {classes[-1]['l1']:7.1f}  {line}",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "dataset": args.dataset, "target": args.target,
                                    "clean_size": len(x), "scored": len(xs), "seed": args.seed,
                                    "patch_steps": cfg.patch_steps, "patch_l1": cfg.patch_l1, "sizes": list(sizes),
                                    "torch": torch.__version__, "classes": classes}, indent=1))


if __name__ == "__main__":
    main()
