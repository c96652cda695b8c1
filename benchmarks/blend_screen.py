"""Does a blended backdoor stand out in the blend screen? The screen's rate of every class, per model.

``IBAUConfig(blend_search=0.1)`` screens every class in round 1 (``blend_screen`` Adam steps each) and carries
the pattern of the class reached most in the θ steps of every round. On a model with a blended backdoor
(Blend, Trojan WM) that class is the target; on a model without one the screen still keeps *some* class, and
carrying its pattern costs clean accuracy for nothing (the authors' BadNets checkpoint: 2.5-5 ACC points,
docs/presets.md, stop 55). A gate needs evidence a defender has: how far the kept class stands out from the
others in the screen. This records, for each model handed over (round 1 sees it as it is), the screen's rate of
every class and the continued search's rate, with the same generator, batches and sample as a round 1 of
``unlearn``; ``--summary`` prints the table a gate is chosen from.

    python benchmarks/blend_screen.py --npz ../shared/data/gtsrb.npz --out docs/measurements/issue19/blend_screen \\
        docs/measurements/issue17/gtsrb/models/train-*/
    python benchmarks/blend_screen.py --task authors --npz ../shared/data/cifar10.npz \\
        --out docs/measurements/issue19/blend_screen ../shared/models/badnets_8_02_ckpt.pth
    python benchmarks/blend_screen.py --summary docs/measurements/issue19/blend_screen/*.json

The clean set is ``compare_presets.py``'s (``load_task``: the bench's defender split, or the authors' first 5,000
test images). No trigger and no held-out image is used. ``standout`` (the gate's statistic) is the top rate minus
the median of the others.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from ibau import IBAUConfig
from ibau.training import iterate_batches
from ibau.unlearn.blend import blend_trigger, standout
from ibau.unlearn.core import FOOLING_SAMPLE, predictions, round_steps
from ibau.utils import environment


def screen(args, model_path: str) -> dict:
    """Round 1's blend screen on one model: every class's rate, the kept class and its continued rate."""
    from compare_presets import load_task  # this script's sibling: benchmarks/ is on the path when it runs

    args.model = model_path
    model, clean, _, _, num_classes, base = load_task(args, Path("runs/blend_screen"))
    cfg = IBAUConfig(**base, blend_search=args.alpha, blend_screen=args.screen, seed=args.seed)
    model.eval()
    x_all, y_all = clean.images, clean.labels
    inner_steps, _ = round_steps(cfg, len(x_all))
    before = predictions(model, x_all)[:FOOLING_SAMPLE]
    gen = torch.Generator().manual_seed(cfg.seed + 3)  # the smooth and blend searches' generator in unlearn

    def batches():
        return iterate_batches(x_all, y_all, cfg.batch_size, gen, shuffle=cfg.shuffle)

    notes: dict = {}
    t0 = time.perf_counter()
    _, kept, rate = blend_trigger(model, batches, x_all[:FOOLING_SAMPLE], cfg, inner_steps, num_classes,
                                  before=before, notes=notes)
    return {"model": model_path, "task": args.task, "clean_size": len(x_all), "seed": cfg.seed,
            "alpha": cfg.blend_search, "screen_steps": cfg.blend_screen, "steps": inner_steps,
            "num_classes": num_classes, "rates": notes["rates"], "kept": kept, "kept_rate": rate,
            "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(), "env": environment()}


def standing(rates: list[float]) -> dict:
    """How far the top class stands out: its rate, the runner-up's, and the median of the others."""
    ordered = sorted(rates, reverse=True)
    return {"top": ordered[0], "second": ordered[1], "median": statistics.median(ordered[1:])}


def markdown(paths: list[Path]) -> str:
    lines = ["| model | seed | kept class | screen: top / second / median of the rest | stands out by "
             "(`standout`) | kept, after the search |",
             "|---|---:|---:|---|---:|---:|"]
    for path in sorted(paths):
        run = json.loads(path.read_text())
        s = standing(run["rates"])
        model = Path(run["model"])  # a bench model: <dataset folder>/models/<job>/model.safetensors
        name = f"{model.parents[2].name}/{model.parent.name}" if model.suffix == ".safetensors" else model.name
        lines.append(f"| {name} | {run['seed']} | {run['kept']} | {100 * s['top']:.1f} / {100 * s['second']:.1f} / "
                     f"{100 * s['median']:.1f} | {100 * standout(run['rates']):.1f} | {100 * run['kept_rate']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="bench model folders (model.safetensors inside) or model files")
    ap.add_argument("--summary", nargs="+", type=Path, help="print the table of these records and stop")
    ap.add_argument("--task", choices=["cifar", "authors"], default="cifar")
    ap.add_argument("--npz")
    ap.add_argument("--trigger", help=argparse.SUPPRESS)  # load_task reads it; unused here
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--screen", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.summary:
        print(markdown(args.summary))
        return
    if args.out is None or not args.models:
        ap.error("give the models and --out to record screens")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for given in args.models:
        path = Path(given)
        model_file = path / "model.safetensors" if path.is_dir() else path
        name = path.name if path.is_dir() else path.stem
        for seed in args.seeds:
            args.seed = seed
            dest = args.out / f"{name}_a{args.alpha:g}_s{args.screen}_seed{seed}.json"
            if dest.exists():
                continue
            result = screen(args, str(model_file))
            s = standing(result["rates"])
            print(f"{name} seed {seed}: kept {result['kept']} ({100 * result['kept_rate']:.1f}%), screen top "
                  f"{100 * s['top']:.1f} second {100 * s['second']:.1f} median {100 * s['median']:.1f} "
                  f"({result['seconds']:.0f}s)", flush=True)
            tmp = dest.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            tmp.replace(dest)


if __name__ == "__main__":
    main()
