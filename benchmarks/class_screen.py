"""Can the class search be cut short? Traces of every class's sparse targeted δ, step by step.

The default's class search (:func:`ibau.unlearn.inner.class_patch`) runs ``patch_steps`` (40) descent steps
for every class and reads a stamp from each δ; on GTSRB (43 classes) that is about 95% of I-BAU's time to
effect (docs/results.md, Table 6), and it found nothing there. A *screen* would run every class for a few
steps and continue only the classes whose δ looks most like a trigger. This records, for one model and one
seed, what such a rule would see: each class's cross-entropy to the class, ‖δ‖₁ and ‖δ‖₂ after every step,
and the stamp the full search reads (the same batches, generator and scoring as a default round 1, which
runs on the model as handed over). The rule is then chosen from these traces (``--summary``) and measured
end to end with ``compare_presets.py``.

    python benchmarks/class_screen.py --task digits --arch dp:small_vgg --split-seed 1 --clean-size 100 \\
        --seed 1 --out docs/measurements/issue19/class_screen/digits-dp_small_vgg_n100_split1_seed1.json
    python benchmarks/class_screen.py --task cifar --npz ../shared/data/gtsrb.npz \\
        --model docs/measurements/issue17/gtsrb/models/train-smooth-r0.2-s0-f2c18273/model.safetensors \\
        --seed 0 --out docs/measurements/issue19/class_screen/gtsrb_smooth_seed0.json
    python benchmarks/class_screen.py --summary docs/measurements/issue19/class_screen/*.json

Model loading, clean sets and the digits models are ``compare_presets.py``'s (``load_task``), so a trace
belongs to the same run as that script's records with the same arguments. The trigger is not used.
Trace files of digits models are named `digits-...`: `digits_*` under docs/measurements is the ignored model cache.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

from ibau import IBAUConfig
from ibau.training import iterate_batches
from ibau.unlearn.core import FOOLING_SAMPLE, predictions
from ibau.unlearn.inner import delta_patch, screen_rate, targeted_delta
from ibau.utils import environment

SCREENS = (3, 5, 10, 20)
CRITERIA = ("ce", "ce_mean", "l1", "objective", "stamp")


def _compare_presets():
    spec = importlib.util.spec_from_file_location("compare_presets", Path(__file__).with_name("compare_presets.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_presets"] = module
    spec.loader.exec_module(module)
    return module


def trace(args) -> dict:
    cp = _compare_presets()
    args.model_cache.mkdir(parents=True, exist_ok=True)
    model, clean, _, _, num_classes, base = cp.load_task(args, args.model_cache)
    cfg = IBAUConfig.preset("default", **base, seed=args.seed)
    model.eval()
    x_all, y_all = clean.images, clean.labels
    # as a default round 1: pseudo-labels of the model as handed over, the search's own generator (seed + 1)
    labels = predictions(model, x_all)
    before = labels[:FOOLING_SAMPLE]
    search_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def batches():
        return iterate_batches(x_all, y_all, cfg.batch_size, search_gen, shuffle=cfg.shuffle)

    classes = []
    t_all = time.perf_counter()
    for c in range(num_classes):
        steps: list[dict] = []

        def record(delta: torch.Tensor, ce: float, steps=steps, c=c) -> None:
            l1, l2 = float(delta.abs().sum()), float(delta.norm())
            steps.append({"ce": ce, "l1": l1, "l2": l2,
                          "objective": ce + cfg.inner_penalty * l2 ** 2 + cfg.patch_l1 * l1})
            if len(steps) in SCREENS:
                # the screen's own score (inner.SCREEN_SAMPLE clean images)
                steps[-1]["stamp"] = screen_rate(model, x_all, before, delta, c)

        t0 = time.perf_counter()
        delta = targeted_delta(model, batches, x_all[0], c, cfg, cfg.patch_steps, on_step=record)
        search_s = time.perf_counter() - t0
        found = delta_patch(model, x_all[:FOOLING_SAMPLE], delta, cfg.patch_threshold, before=before)
        stamp = None if found is None else {"pixels": int(found[0].sum()), "rate": found[2]}
        classes.append({"class": c, "steps": steps, "stamp": stamp, "search_seconds": search_s,
                        "stamp_seconds": time.perf_counter() - t0 - search_s})
        print(f"class {c:2d} ‖δ‖₁ {steps[-1]['l1']:8.1f} ce {steps[-1]['ce']:.3f} stamp {stamp}", flush=True)
    winner = None
    for entry in classes:  # class_patch's rule: the smallest stamp, then the highest rate
        s = entry["stamp"]
        if s is not None and (winner is None or (s["pixels"], -s["rate"]) < (winner["pixels"], -winner["rate"])):
            winner = {**s, "class": entry["class"]}
    return {"task": args.task, "model": args.model, "arch": args.arch, "split_seed": args.split_seed,
            "clean_size": len(x_all), "seed": args.seed, "num_classes": num_classes,
            "patch_steps": cfg.patch_steps, "patch_l1": cfg.patch_l1, "winner": winner, "classes": classes,
            "seconds": time.perf_counter() - t_all, "threads": torch.get_num_threads(), "env": environment()}


def ranks_at(run: dict, screen: int, criterion: str) -> list[int]:
    """The classes ordered by ``criterion`` after ``screen`` steps, most trigger-like (smallest) first;
    ``ce_mean``: the cross-entropy averaged over the screen's second half (one batch's value is noisy)."""
    def score(c: int) -> float:
        steps = run["classes"][c]["steps"][:screen]
        if criterion == "ce_mean":
            tail = steps[screen // 2:]
            return sum(s["ce"] for s in tail) / len(tail)
        if criterion == "stamp":  # the highest rate first; traces recorded before it existed: all equal
            return -steps[-1].get("stamp", 0.0)
        return steps[-1][criterion]
    return sorted(range(run["num_classes"]), key=score)


def markdown(paths: list[Path]) -> str:
    """For every trace and screen length: the full search's winner's rank under each criterion (1 = first),
    and every class that gave a stamp; '–' where the full search found none, '·' where the trace has no
    stamp rates (recorded before they were)."""
    lines = ["| trace | classes | winner (pixels, rate) | classes with a stamp | "
             + " | ".join(f"rank after {k} ({'/'.join(CRITERIA)})" for k in SCREENS) + " |",
             "|---|---:|---|---|" + "---|" * len(SCREENS)]
    for path in sorted(paths):
        run = json.loads(path.read_text())
        w = run["winner"]
        stamped = [e["class"] for e in run["classes"] if e["stamp"] is not None]
        cells = []
        for k in SCREENS:
            if w is None or k > run["patch_steps"]:
                cells.append("–")
                continue
            recorded = "stamp" in run["classes"][w["class"]]["steps"][k - 1]
            cells.append("/".join(str(ranks_at(run, k, crit).index(w["class"]) + 1)
                                  if crit != "stamp" or recorded else "·" for crit in CRITERIA))
        head = "none" if w is None else f"{w['class']} ({w['pixels']}, {w['rate']:.3f})"
        lines.append(f"| {path.stem} | {run['num_classes']} | {head} | {stamped} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", nargs="+", type=Path, help="print the ranks table of these traces and stop")
    ap.add_argument("--task", choices=["digits", "cifar", "authors"], default="digits")
    ap.add_argument("--npz")
    ap.add_argument("--model")
    ap.add_argument("--trigger", help=argparse.SUPPRESS)  # compare_presets' load_task reads it; unused here
    ap.add_argument("--arch", default="small_vgg", help="digits: architecture trained for the task")
    ap.add_argument("--model-cache", type=Path, default=Path("docs/measurements/issue19/probe_confirm/digits"),
                    help="digits: folder of compare_presets' cached models (trained and kept there if absent)")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="the I-BAU seed: the class search's batch order")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.summary:
        print(markdown(args.summary))
        return
    if args.out is None:
        ap.error("--out is required to record a trace")
    if args.out.exists():
        print(f"{args.out} exists: kept")
        return
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    result = trace(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
