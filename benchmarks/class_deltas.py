"""Which classes a small additive δ reaches: for every class and every ℓ2 radius, a targeted universal δ
(:func:`ibau.unlearn.inner.targeted_delta` without the ℓ1 term, projected on the ball after every step) and the
share of the other-class clean images it sends to that class.

Written to see why the seven-trigger CIFAR-10 model keeps Trojan WM where the blended screen, the stamps and the
trend stop remove the others (issue 19 part 3): a backdoor's target is reached by a δ far smaller than a natural
class needs, if the backdoor is additive enough; the radius at which each class is first reached ranks them.

    python benchmarks/class_deltas.py --model docs/measurements/issue17/cifar/models/train-multi7-r0.2-s0-c2d1f1cf/model.safetensors \\
        --dataset npz --data-dir ../shared/data/cifar10.npz --bounds 1,4,6,14 \\
        --out docs/measurements/issue19/class_deltas/cifar_multi7_dev.json

``--targets`` only marks the attack's classes in the output (the evaluator's knowledge); nothing is chosen from it.
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
from ibau.unlearn.inner import perturb, sent_rate, targeted_delta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--arch", default=None, help="for model files without a card (the authors' checkpoint)")
    ap.add_argument("--bounds", default="1,4,6,14", help="comma-separated ℓ2 radii of δ (pixel space, [0,1] images)")
    ap.add_argument("--steps", type=int, default=30, help="descent steps of each targeted search (default 30)")
    ap.add_argument("--targets", default="", help="comma-separated attack targets (marks the output only)")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0, help="batch order of the searches")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    net, card, clean, _ = load_for_dataset(args.model, args.dataset, args.data_dir, False, args.clean_size, 0, args.arch)
    net.eval()
    # the default's optimiser and step; no ℓ1 (a diffuse δ) and no ‖δ‖² penalty: the radius alone bounds δ
    cfg = IBAUConfig().replace(patch_l1=0.0, inner_penalty=0.0)
    x, y = clean.images, clean.labels
    xs = x[:FOOLING_SAMPLE]
    with torch.no_grad():
        before = net(xs).argmax(1)
    targets = {int(t) for t in args.targets.split(",") if t}
    bounds = [float(b) for b in args.bounds.split(",")]
    rows = []
    for bound in bounds:
        t0, rates = time.perf_counter(), []
        for c in range(card.num_classes):
            gen = torch.Generator().manual_seed(args.seed)
            delta = targeted_delta(net, lambda g=gen: iterate_batches(x, y, cfg.batch_size, g, shuffle=True), x[0], c, cfg,
                                   args.steps, bound=bound)
            rates.append(round(sent_rate(net, xs, before, lambda z, d=delta: perturb(z, d, cfg.clamp), c), 4))
        rows.append({"bound": bound, "rates": rates, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"ℓ2 ≤ {bound:5.1f}: " + " ".join(f"{c}{'*' if c in targets else ''}:{r:.2f}" for c, r in enumerate(rates)),
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "dataset": args.dataset, "targets": sorted(targets),
                                    "clean_size": len(x), "scored": len(xs), "seed": args.seed, "steps": args.steps,
                                    "inner_optimizer": cfg.inner_optimizer, "inner_lr": cfg.inner_lr,
                                    "metric": "share of the scored clean images not predicted as the class that x+δ "
                                              "sends to it", "torch": torch.__version__, "bounds": rows}, indent=1))


if __name__ == "__main__":
    main()
