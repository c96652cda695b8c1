"""Compare I-BAU configurations side by side on poisoned models, over seeds (issue 15's measurements).

    # the I-BAU authors' CIFAR-10 BadNets checkpoint (clean set test[:5000], scored on test[5000:])
    python benchmarks/compare_presets.py --task authors --npz ../shared/data/cifar10.npz \
        --model ../shared/models/badnets_8_02_ckpt.pth --rounds 1 --seeds 0 1 2 3 4 reference=reference
    # a model made by `ibau attack` (5,000 clean test images drawn with seed 0, the other 5,000 held out)
    python benchmarks/compare_presets.py --task cifar --npz ../shared/data/cifar10.npz \
        --model runs/cpu_models/badnets/model.safetensors --rounds 3 default=default
    # digits: the demo's poisoned model (trained here, seeded, cached in --out), 400/300/100 clean images,
    # small VGG or its GroupNorm form (no BatchNorm)
    python benchmarks/compare_presets.py --task digits --split-seed 0 --clean-size 100 --arch dp:small_vgg default=default

Each configuration is NAME=preset[,key=value...], e.g. ``ref=reference`` or ``mr=default,solver=minres``.
One JSON record per (configuration, seed) goes to --out; a record that exists is not run again (resumable).
Per round it holds held-out ACC/ASR, ‖δ‖, where δ sends clean images (fooling rate per class, a defender's
diagnostic) and the share of δ's energy on the true trigger's mask (evaluation only: no defense sees it).

``--probe-bound C`` also searches, before the first round and after every round, one δ inside the ℓ2 ball of
radius C on the clean set (one pass, the model's own labels, no θ step) and records where it sends the
clean images, and a second δ in that ball aimed at the class the first one found before unlearning (the
defender's suspect): signals a defender could compute, set beside the held-out ASR (issue 19 part 3).
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


def trigger_share(delta: torch.Tensor, trigger) -> float | None:
    """Share of ‖δ‖² on the trigger's mask (evaluation only); None for triggers without a mask."""
    try:
        mask = trigger.mask(tuple(delta.shape))
    except NotImplementedError:
        return None
    energy = delta.detach().cpu().double().pow(2)  # δ lives on the run's device, the mask on the CPU
    return float((energy * mask.double()).sum() / energy.sum().clamp_min(1e-300))


def model_trigger(path: str | None):
    """The trigger of a model made by ``ibau attack`` (its trigger.json), or the authors' BadNets → 8 without one."""
    if path is None:
        return BadNets(target=8)
    from ibau.attacks.io import load_trigger
    return load_trigger(path)


def probe(model, x: torch.Tensor, bound: float, num_classes: int, seed: int, target: int | None = None) -> dict:
    """One δ search inside the ℓ2 ball of radius ``bound`` on the clean images ``x`` (one pass, eval mode) and
    where that δ sends them: ``fooling`` per class and its top class. Untargeted (``target`` None): ascent on
    the CE of the model's own predictions, as I-BAU's search. Targeted: descent on the CE towards ``target``
    (the class the untargeted probe found before unlearning: the defender's suspect, no knowledge of the
    trigger), whose ``to_target`` share says how easily clean images are still sent there."""
    from ibau.training import iterate_batches
    from ibau.unlearn import solve_delta
    from ibau.unlearn.core import fooling_rates, predictions
    from ibau.unlearn.inner import project
    cfg = IBAUConfig(norm="l2", norm_bound=bound, pseudo_labels=False, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    labels = predictions(model, x) if target is None else torch.full((len(x),), target, dtype=torch.int64)
    batches = iterate_batches(x, labels, cfg.batch_size, gen, shuffle=True)
    if target is None:
        steps = (len(x) + cfg.batch_size - 1) // cfg.batch_size
        delta, _ = solve_delta(model, lambda: batches, tuple(x.shape[1:]), cfg, steps)
    else:
        delta = torch.zeros(x.shape[1:], requires_grad=True)
        # the same SGD step and projection as the untargeted search, descending; not inner.targeted_delta, whose
        # SGD update rounds differently in the last bit, so the records made with this loop stay reproducible
        for xb, yb in batches:
            (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xb + delta), yb), delta)
            with torch.no_grad():
                delta -= cfg.inner_lr * grad
            project(delta, cfg.norm, cfg.norm_bound)
        delta = delta.detach()
    fool = fooling_rates(model, x, delta, cfg.clamp, num_classes)
    model.train(was_training)
    top = max(range(num_classes), key=lambda c: fool[c])
    out = {"bound": bound, "target": target, "fooling": fool, "top": top, "top_share": fool[top],
           "delta_norm": float(delta.norm())}
    if target is not None:
        out["to_target"] = fool[target]
    return out


def _digits_model(args, out: Path):
    """The demo's poisoned model for --split-seed, trained once (seeded) and cached."""
    from ibau.attacks import poison
    from ibau.data import ImageSet
    from ibau.demo import IMAGE_SIZE, NUM_CLASSES, demo_trigger, split_digits
    from ibau.models import ModelCard, build_model, load_model, save_model
    from ibau.training import train_classifier

    path = out / f"digits_{args.arch.replace(':', '_')}_split{args.split_seed}.safetensors"
    card = ModelCard(args.arch, NUM_CLASSES, [3, IMAGE_SIZE, IMAGE_SIZE])
    if path.exists():
        return load_model(path, card)[0]
    train, _, _ = split_digits(args.split_seed)
    p = poison(train.images, train.labels, demo_trigger(), ratio=0.2, num_classes=NUM_CLASSES, seed=args.split_seed)
    torch.manual_seed(args.split_seed)
    model = build_model(args.arch, num_classes=NUM_CLASSES, input_size=IMAGE_SIZE)
    train_classifier(model, ImageSet(p.images, p.labels), epochs=12, lr=1e-3, batch_size=64, seed=args.split_seed,
                     device="cpu", progress=False)
    save_model(model, path, card)
    return model.eval()


def load_task(args, out: Path):
    from ibau.data import ImageSet, defender_split, load_npz
    from ibau.models import ModelCard, load_model

    if args.task == "digits":
        from ibau.demo import NUM_CLASSES, demo_config, demo_trigger, split_digits

        model = load_model(args.model)[0] if args.model else _digits_model(args, out)
        _, clean, held = split_digits(args.split_seed)
        if args.clean_size < len(clean):
            clean = clean.subset(torch.arange(args.clean_size))
        base = {k: v for k, v in demo_config().to_dict().items() if k in ("batch_size", "outer_lr")}
        return model, clean, held, demo_trigger(), NUM_CLASSES, base
    _, test = load_npz(args.npz, train_limit=1)
    if args.task == "authors":  # their split: the unlearning set is test[:5000], the rest is scored
        model, _ = load_model(args.model, ModelCard("small_vgg", 10, [3, 32, 32]))
        n = args.clean_size
        clean = ImageSet(test.images[:n], test.labels[:n])
        held = ImageSet(test.images[5000:], test.labels[5000:])
        return model, clean, held, BadNets(target=8), 10, {"batch_size": 100}
    model, card = load_model(args.model)
    clean, held = defender_split(test, args.clean_size, seed=0)
    return model, clean, held, model_trigger(args.trigger), card.num_classes, {"batch_size": 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=["digits", "cifar", "authors"], default="digits")
    ap.add_argument("--npz")
    ap.add_argument("--model")
    ap.add_argument("--trigger", help="cifar: the model's trigger.json (default: BadNets → 8)")
    ap.add_argument("--arch", default="small_vgg", help="digits: architecture trained for the task")
    ap.add_argument("--clean-size", type=int, default=5000, help="defender's clean images (digits: of the 400)")
    ap.add_argument("--split-seed", type=int, default=0, help="digits: the demo seed of the model and split")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tag", default="", help="suffix of the record names (e.g. the model)")
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--probe-bound", type=float, default=None,
                    help="before and after every round, search a δ inside this ℓ2 radius on the clean set and record "
                         "where it sends the clean images")
    ap.add_argument("configs", nargs="*", default=DEFAULT_CONFIGS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) / args.task
    out.mkdir(parents=True, exist_ok=True)
    model, clean, held, trigger, num_classes, base = load_task(args, out)
    base["rounds"] = args.rounds  # the task's batch size (and the demo's outer lr) apply to every preset
    before = evaluate(model, held.images, held.labels, trigger, num_classes)
    print(f"before: ACC {100 * before['acc']:.2f} ASR {100 * before['asr']:.2f} ({len(clean)} clean)", flush=True)
    tag = args.tag or (f"{args.arch.replace(':', '_')}_n{args.clean_size}_split{args.split_seed}" if args.task == "digits" else "")
    for spec in args.configs:
        for seed in args.seeds:
            name, cfg = parse_config(spec, {**base, "seed": seed})
            path = out / f"{name}{'_' + tag if tag else ''}_seed{seed}.json"
            if path.exists():
                continue
            curve = []
            probes, suspect = [], None
            if args.probe_bound is not None:
                probes.append(probe(model, clean.images, args.probe_bound, num_classes, seed))
                suspect = probes[0]["top"]
                probes[0]["targeted"] = probe(model, clean.images, args.probe_bound, num_classes, seed, suspect)

            def score(r, net, d, curve=curve, probes=probes, seed=seed, suspect=suspect):
                m = evaluate(net, held.images, held.labels, trigger, num_classes)
                if args.probe_bound is not None:
                    probes.append(probe(net, clean.images, args.probe_bound, num_classes, seed))
                    probes[-1]["targeted"] = probe(net, clean.images, args.probe_bound, num_classes, seed, suspect)
                    m = {**m, "probe": probes[-1]}
                curve.append({**m, "delta_norm": r.delta_norm, "fooling": r.fooling, "trigger_share": trigger_share(d, trigger),
                              "solver_residual": r.solver_residual, "solver_breakdowns": r.solver_breakdowns,
                              "patch_pixels": r.patch_pixels, "patch_fooling": r.patch_fooling, "patch_class": r.patch_class,
                              "patch_fooling_after": r.patch_fooling_after,
                              "smooth_class": r.smooth_class, "smooth_fooling": r.smooth_fooling,
                              "blend_class": r.blend_class, "blend_fooling": r.blend_fooling,
                              "blend_screen": r.blend_screen,
                              "probe_rate": r.probe_rate, "guard_acc": r.guard_acc, "rolled_back": r.rolled_back,
                              "seconds": r.seconds})

            t0 = time.perf_counter()
            res = unlearn(model, clean, cfg, progress=False, callback=score)
            wall = time.perf_counter() - t0
            row = " ".join(f"r{i + 1}: {100 * c['acc']:.1f}/{100 * c['asr']:.1f}{' (rolled back)' * c['rolled_back']}"
                           for i, c in enumerate(curve))
            if probes:
                row += "  probe " + " ".join(f"{p['top']}:{100 * p['top_share']:.1f}/{100 * p['targeted']['to_target']:.1f}"
                                             for p in probes)
            share = curve[-1]["trigger_share"]
            if cfg.round_selection == "probe":
                row += f"  kept round {res.selected_round} (suspect {res.suspect}: " + \
                    " ".join(f"{100 * c['probe_rate']:.1f}" for c in curve) + ")"
            print(f"{name:>14} seed {seed}: {row}  ({res.seconds:.0f}s, ‖δ‖ {res.history[-1].delta_norm:.2f}, "
                  f"on trigger {share if share is None else round(share, 3)})", flush=True)
            rec = {"name": name, "seed": seed, "task": args.task, "model": args.model, "tag": tag,
                   "clean_size": len(clean), "config": cfg.to_dict(), "before": before, "curve": curve,
                   "probe_before": probes[0] if probes else None,
                   "selected_round": res.selected_round, "suspect": res.suspect,
                   "seconds": res.seconds, "seconds_per_round": [h.seconds for h in res.history], "wall": wall,
                   "threads": torch.get_num_threads(), "env": environment(),
                   "metrics": "ACC/ASR on held-out images (SPEC §4); trigger_share = ‖δ·mask‖²/‖δ‖², evaluation only"}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec, indent=1))
            tmp.replace(path)  # a record exists only once its run finished


if __name__ == "__main__":
    main()
