"""Compare I-BAU configurations side by side on one poisoned model (ACC/ASR after each round, seconds).

    python benchmarks/compare_presets.py --task digits
    python benchmarks/compare_presets.py --task cifar --npz ../shared/data/cifar10.npz \
        --model runs/cifar_badnets/model.safetensors --rounds 2

Each configuration is given as NAME=preset[,key=value...], e.g. ``ref=reference`` or
``ref_cg=reference,solver=cg,solver_iters=3``. Results go to --out as one JSON record per configuration.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ibau import IBAUConfig, unlearn
from ibau.attacks import BadNets
from ibau.metrics import evaluate
from ibau.utils import environment

DEFAULT_CONFIGS = ["reference=reference", "paper=paper"]


def parse_config(spec: str, base: dict) -> tuple[str, IBAUConfig]:
    name, _, rest = spec.partition("=")
    preset, *pairs = rest.split(",")
    overrides = dict(base)
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            overrides[key] = json.loads(value)  # numbers, true/false, null
        except json.JSONDecodeError:
            overrides[key] = value  # choices such as cg, linf, current
    return name, IBAUConfig.preset(preset, **overrides)


def load_task(args):
    if args.task == "digits":
        from ibau.demo import NUM_CLASSES, demo_config, demo_trigger, split_digits
        from ibau.models import load_model

        path = Path(args.model or "runs/demo/poisoned.safetensors")
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `ibau demo --seed N --out DIR` first, then pass --model DIR/poisoned.safetensors --split-seed N")
        model, _ = load_model(path)
        _, clean, held = split_digits(args.split_seed)
        base = {k: v for k, v in demo_config().to_dict().items() if k in ("batch_size", "outer_lr")}
        return model, clean, held, demo_trigger(), NUM_CLASSES, base
    from ibau.data import defender_split, load_npz
    from ibau.models import load_model

    model, card = load_model(args.model)
    _, test = load_npz(args.npz, train_limit=1)
    clean, held = defender_split(test, args.clean_size, seed=0)
    return model, clean, held, BadNets(target=8), card.num_classes, {"batch_size": 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["digits", "cifar"], default="digits")
    ap.add_argument("--npz")
    ap.add_argument("--model")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--split-seed", type=int, default=0, help="digits: the demo seed the model was made with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("configs", nargs="*", default=DEFAULT_CONFIGS)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, clean, held, trigger, num_classes, base = load_task(args)
    base["rounds"] = args.rounds  # the task's batch size (and the demo's outer lr) apply to every preset
    before = evaluate(model, held.images, held.labels, trigger, num_classes)
    print(f"before: ACC {100 * before['acc']:.2f} ASR {100 * before['asr']:.2f}", flush=True)
    out = Path(args.out) / args.task
    out.mkdir(parents=True, exist_ok=True)
    for spec in args.configs:
        for seed in args.seeds:
            name, cfg = parse_config(spec, {**base, "seed": seed})
            curve = []
            t0 = time.perf_counter()
            res = unlearn(model, clean, cfg, progress=False,
                          callback=lambda r, net, d: curve.append(evaluate(net, held.images, held.labels, trigger, num_classes)))
            wall = time.perf_counter() - t0
            row = " ".join(f"r{i + 1}: {100 * c['acc']:.1f}/{100 * c['asr']:.1f}" for i, c in enumerate(curve))
            print(f"{name:>14} seed {seed}: {row}  ({res.seconds:.0f}s, ‖δ‖ {res.history[-1].delta_norm:.2f})", flush=True)
            rec = {"name": name, "seed": seed, "config": cfg.to_dict(), "before": before, "curve": curve,
                   "seconds": res.seconds, "seconds_per_round": [h.seconds for h in res.history], "wall": wall,
                   "env": environment()}
            (out / f"{name}_split{args.split_seed}_seed{seed}.json").write_text(json.dumps(rec, indent=2))


if __name__ == "__main__":
    main()
