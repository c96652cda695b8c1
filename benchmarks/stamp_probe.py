"""Can the default's stamp searches find a model's trigger? One δ search, its stamp at several thresholds,
the targeted search for a given class, and a 5-step ranking of all classes (issue 19: on GTSRB the class
search runs for every one of 43 classes, every round, until a stamp is found).

    python benchmarks/stamp_probe.py --model docs/measurements/issue17/gtsrb/models/train-badnets-r0.2-s0-9f1ae56f/model.safetensors \\
        --dataset gtsrb --data-dir ../shared/data/gtsrb.npz --target 8

The target is the evaluator's knowledge, used here only to read the result; nothing is chosen from it.
"""
from __future__ import annotations

import argparse
import time

import torch

from ibau import IBAUConfig
from ibau.pipeline.defend import load_for_dataset
from ibau.training import iterate_batches
from ibau.unlearn.core import FOOLING_SAMPLE, fooling_rates, round_steps
from ibau.unlearn.inner import delta_patch, solve_delta, targeted_delta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--target", type=int, required=True, help="the attack's target class (to read the result)")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    net, card, clean, _ = load_for_dataset(args.model, args.dataset, args.data_dir, False, args.clean_size, 0)
    net.eval()
    cfg = IBAUConfig()
    x, y = clean.images, clean.labels
    gen = torch.Generator().manual_seed(0)

    def batches():
        return iterate_batches(x, y, cfg.batch_size, gen, shuffle=True)

    xs = x[:FOOLING_SAMPLE]
    t0 = time.perf_counter()
    steps, _ = round_steps(cfg, len(x))  # the default's δ steps, by the rule unlearn uses
    delta, _ = solve_delta(net, batches, tuple(x.shape[1:]), cfg, steps)
    fool = fooling_rates(net, xs, delta, cfg.clamp, card.num_classes)
    top = max(range(len(fool)), key=fool.__getitem__)
    print(f"δ search ({steps} steps, {time.perf_counter() - t0:.0f}s): ‖δ‖ {float(delta.norm()):.1f}, "
          f"sends {fool[top]:.0%} of clean images to class {top} (target {args.target})")
    for threshold in (cfg.patch_threshold, 0.9, 0.8, 0.5):
        found = delta_patch(net, xs, delta, threshold)
        print(f"  δ's stamp at threshold {threshold}: " + ("none" if found is None else
              f"{int(found[0].sum())} pixels, rate {found[2]:.3f}"))
    t0 = time.perf_counter()
    aimed = targeted_delta(net, batches, x[0], args.target, cfg, cfg.patch_steps)
    print(f"targeted search for class {args.target} ({cfg.patch_steps} steps, {time.perf_counter() - t0:.0f}s): "
          f"‖δ‖₁ {float(aimed.abs().sum()):.0f}")
    for threshold in (cfg.patch_threshold, 0.9, 0.8, 0.5):
        found = delta_patch(net, xs, aimed, threshold)
        print(f"  its stamp at threshold {threshold}: " + ("none" if found is None else
              f"{int(found[0].sum())} pixels, rate {found[2]:.3f}"))
    scores = []
    for c in range(card.num_classes):
        d = targeted_delta(net, batches, x[0], c, cfg, 5)
        with torch.no_grad():
            hit = float((net(xs[:500] + d).argmax(1) == c).float().mean())
        scores.append((c, hit, float(d.abs().sum())))
    scores.sort(key=lambda s: (-s[1], s[2]))
    order = [s[0] for s in scores]
    print(f"5-step ranking (share sent, then smallest ‖δ‖₁): class {args.target} is #{order.index(args.target) + 1} "
          f"of {card.num_classes}; first five {[(c, round(h, 2), round(n)) for c, h, n in scores[:5]]}")


if __name__ == "__main__":
    main()
