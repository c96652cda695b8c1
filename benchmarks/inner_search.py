"""What the inner maximisation finds, without any θ step: issue 15's "does δ find the trigger inside Cδ?".

For each variant of the δ search (``ibau.unlearn.solve_delta`` with an ``IBAUConfig``), run it once on the
defender's clean set of a poisoned model and print where δ sends the clean images (fooling rate per class,
computed from clean data only), ‖δ‖, the share of δ's energy on the true trigger's mask (evaluation only)
and the seconds. One process, variants one after another, so the seconds compare side by side.

    python benchmarks/inner_search.py --npz ../shared/data/cifar10.npz \
        --model ../shared/models/badnets_8_02_ckpt.pth --authors --out runs/issue15/inner_authors.json \
        "1 pass=default" "2 passes=default,inner_passes=2" "adam=default,inner_optimizer=adam,inner_lr=0.1" \
        "Cδ 5=default,norm_bound=5" "no bound=reference"

``python benchmarks/inner_search.py --table FOLDER`` prints the records of a folder as one markdown table.

A variant ``NAME=targeted:C,preset,...`` searches a δ that sends the images to class C (CE towards C,
Adam), for comparison with the untargeted searches: under a generous bound every class is reachable.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def targeted(model, x, cfg, target: int, passes: int, seed: int) -> torch.Tensor:
    """δ minimising CE(f(x+δ), target) under cfg's constraint: Adam, one step per batch."""
    from ibau.unlearn.inner import perturb, project
    gen = torch.Generator().manual_seed(seed)
    delta = torch.zeros(x.shape[1:], requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.inner_lr)
    for _ in range(passes):
        for idx in torch.randperm(len(x), generator=gen).split(cfg.batch_size):
            loss = F.cross_entropy(model(perturb(x[idx], delta, cfg.clamp)), torch.full((len(idx),), target))
            delta.grad, = torch.autograd.grad(loss, delta)
            opt.step()
            project(delta, cfg.norm, cfg.norm_bound)
    return delta.detach()


def table(folder: Path) -> str:
    """A markdown table of every record file in ``folder``: per variant ‖δ‖, the class δ sends the most clean
    images to (and their share) and δ's share on the trigger's mask."""
    files = sorted(folder.glob("*.json"))
    names = list(dict.fromkeys(v for f in files for v in json.loads(f.read_text())))
    lines = ["| record | " + " | ".join(f"{n}: ‖δ‖ → top class (share), on trigger" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for f in files:
        rows, cells = json.loads(f.read_text()), []
        for n in names:
            r = rows.get(n)
            if r is None:
                cells.append("–")
                continue
            fool = r["fooling"]
            top = max(range(len(fool)), key=lambda c: fool[c])
            share = "" if r["trigger_share"] is None else f", {r['trigger_share']:.2f}"
            cells.append(f"{r['delta_norm']:.0f} → {top} ({100 * fool[top]:.1f}%){share}")
        lines.append(f"| {f.stem} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--table"]:
        print(table(Path(sys.argv[2])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--authors", action="store_true", help="the authors' .pth file (small VGG, their split)")
    ap.add_argument("--trigger", help="the model's trigger.json, for δ's share on it (default: BadNets → 8)")
    ap.add_argument("--clean-size", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from compare_presets import model_trigger, parse_config, trigger_share
    from ibau.data import defender_split, load_npz
    from ibau.models import ModelCard, load_model
    from ibau.unlearn import solve_delta
    from ibau.unlearn.core import fooling_rates
    _, test = load_npz(args.npz, train_limit=1)
    if args.authors:
        model, card = load_model(args.model, ModelCard("small_vgg", 10, [3, 32, 32]))
        x = test.images[:args.clean_size]
    else:
        model, card = load_model(args.model)
        x = defender_split(test, args.clean_size, seed=0)[0].images
    model.eval()
    trigger = model_trigger(args.trigger)
    num_classes = card.num_classes
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else {}
    torch.set_flush_denormal(True)
    for spec in args.variants:
        name, _, rest = spec.partition("=")
        if name in rows:
            continue
        target = None
        if rest.startswith("targeted:"):
            head, _, rest = rest.partition(",")
            target = int(head.split(":")[1])
        _, cfg = parse_config(f"{name}={rest}", {"batch_size": 100, "seed": args.seed})
        t0 = time.perf_counter()
        if target is None:
            steps = cfg.inner_passes * ((len(x) + cfg.batch_size - 1) // cfg.batch_size)
            gen = torch.Generator().manual_seed(cfg.seed)
            from ibau.training import iterate_batches
            ys = torch.zeros(len(x), dtype=torch.long)  # pseudo-labels replace them (every preset here)
            delta, _ = solve_delta(model, lambda ys=ys, cfg=cfg, gen=gen: iterate_batches(x, ys, cfg.batch_size, gen, shuffle=cfg.shuffle),
                                   tuple(x.shape[1:]), cfg, steps)
        else:
            delta = targeted(model, x, cfg, target, cfg.inner_passes, cfg.seed)
        seconds = time.perf_counter() - t0
        fool = fooling_rates(model, x, delta, cfg.clamp, num_classes)
        rows[name] = {"config": cfg.to_dict(), "target": target, "delta_norm": float(delta.norm()),
                      "fooling": fool, "trigger_share": trigger_share(delta, trigger), "seconds": seconds,
                      "threads": torch.get_num_threads()}
        top = max(range(num_classes), key=lambda c: fool[c])
        share = float("nan") if rows[name]["trigger_share"] is None else rows[name]["trigger_share"]
        goal = getattr(trigger, "target", None)
        to_goal = "" if goal is None else f"to class {goal} {fool[goal]:.3f}  "
        print(f"{name:>24}: ‖δ‖ {float(delta.norm()):9.2f}  on trigger {share:.3f}  "
              f"{to_goal}top class {top} ({fool[top]:.3f})  {seconds:.1f}s", flush=True)
        out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
