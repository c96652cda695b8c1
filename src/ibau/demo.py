"""The embedded end-to-end demo: poison digits with BadNets, train, unlearn with I-BAU, report."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .attacks import BadNets, poison
from .data import ImageSet, load_digits
from .metrics import DEFINITIONS, der, evaluate
from .models import ModelCard, save_model, small_vgg
from .report import markdown_report, plot_curve, plot_delta, write_json
from .training import train_classifier
from .unlearn import IBAUConfig, unlearn
from .utils import environment, resolve_device, seed_everything

#: The demo's protocol on the 1,797 digits: sizes of the poisoned-training and defender's clean sets;
#: the remaining images are the held-out test set.
TRAIN_SIZE, CLEAN_SIZE = 1000, 400
IMAGE_SIZE, NUM_CLASSES = 32, 10


def split_digits(seed: int) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Seeded disjoint split of the digits into (train, clean, held_out)."""
    data = load_digits(IMAGE_SIZE)
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return (data.subset(perm[:TRAIN_SIZE]), data.subset(perm[TRAIN_SIZE:TRAIN_SIZE + CLEAN_SIZE]),
            data.subset(perm[TRAIN_SIZE + CLEAN_SIZE:]))


def demo_trigger() -> BadNets:
    """The demo's attack: a 4×4 white square 1 pixel from the bottom-right corner, target 8."""
    return BadNets(size=4, margin=1, target=8)


def demo_config(preset: str = "default", **overrides: Any) -> IBAUConfig:
    """An I-BAU preset with a batch size and outer step size suited to the 400-image clean set (16 θ steps
    a round, Adam 2e-4), and 5 rounds. Chosen in docs/presets.md."""
    return IBAUConfig.preset(preset, **{"batch_size": 25, "outer_lr": 2e-4, "rounds": 5, **overrides})


def run_demo(out: str | Path = "runs/demo", seed: int = 0, epochs: int = 12, config: IBAUConfig | None = None,
             device: str | None = None, progress: bool = True, log=print) -> dict[str, Any]:
    """Run the whole story and write ``metrics.json``, ``report.md``, ``delta.png``, ``curve.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    cfg = (config or demo_config()).replace(seed=seed, device=str(dev))
    seed_everything(seed)
    train, clean, held = split_digits(seed)
    trigger = demo_trigger()
    poisoned = poison(train.images, train.labels, trigger, ratio=0.2, num_classes=NUM_CLASSES, seed=seed)
    log(f"[1/4] training a small VGG on {len(train)} digits, {len(poisoned.indices)} stamped with BadNets → class 8")
    model = small_vgg(NUM_CLASSES, input_size=IMAGE_SIZE)
    t0 = time.perf_counter()
    train_classifier(model, ImageSet(poisoned.images, poisoned.labels), epochs=epochs, lr=1e-3, batch_size=64,
                     seed=seed, device=str(dev), progress=progress, desc="train (poisoned)")
    train_seconds = time.perf_counter() - t0
    save_model(model, out / "poisoned.safetensors", _card(model, "poisoned", trigger, seed))

    def measure(net) -> dict[str, float]:
        return evaluate(net, held.images, held.labels, trigger, NUM_CLASSES)

    before = measure(model)
    log(f"[2/4] before: ACC {100 * before['acc']:.1f}%  ASR {100 * before['asr']:.1f}%  RA {100 * before['ra']:.1f}%")
    log(f"[3/4] I-BAU with {len(clean)} clean images, {cfg.rounds} rounds")
    curve = [{"round": 0, **before}]

    def on_round(record, net, delta):
        m = measure(net)
        curve.append({"round": record.round, **m})
        return m

    result = unlearn(model, clean, cfg, callback=on_round, progress=progress)
    after = curve[-1]
    log(f"[4/4] after:  ACC {100 * after['acc']:.1f}%  ASR {100 * after['asr']:.1f}%  RA {100 * after['ra']:.1f}%"
        f"  ({result.seconds:.1f}s)")
    save_model(result.model, out / "unlearned.safetensors", _card(result.model, "unlearned by I-BAU", trigger, seed))

    shape = tuple(held.images.shape[1:])
    trigger_image = trigger.apply(torch.zeros(1, *shape))[0]
    deltas = {"δ, round 1": result.history[0].delta} if result.history else {}
    if len(result.history) > 1:
        deltas[f"δ, round {len(result.history)}"] = result.history[-1].delta
    plot_delta(deltas, trigger_image, out / "delta.png")
    plot_curve(curve, out / "curve.png")
    record = {
        "task": f"demo: digits {IMAGE_SIZE}x{IMAGE_SIZE}, BadNets 4x4 -> 8, 20% poison, small VGG",
        "seed": seed, "device": str(dev), "interrupted": result.interrupted,
        "sizes": {"train": len(train), "clean": len(clean), "held_out": len(held)},
        "before": before, "after": after, "der": der(before, after),
        "seconds": {"train": train_seconds, "defense": result.seconds},
        "rounds": [{"round": h.round, "inner_loss": h.inner_loss, "outer_loss": h.outer_loss,
                    "delta_norm": h.delta_norm, "seconds": h.seconds, **h.extra} for h in result.history],
        "config": cfg.to_dict(), "attack": repr(trigger), "epochs": epochs,
        "definitions": DEFINITIONS, "environment": environment(),
    }
    write_json(out / "metrics.json", record)
    lines = [f"Seed {seed}; {len(train)} training digits (20% BadNets poison), {len(clean)} clean digits for the "
             f"defender, {len(held)} held-out digits for every metric. I-BAU config: "
             f"`{cfg.to_dict()}`.", "", "| round | ACC % | ASR % | ‖δ‖₂ |", "|---:|---:|---:|---:|"]
    lines += [f"| {p['round']} | {100 * p['acc']:.2f} | {100 * p['asr']:.2f} | "
              + (f"{result.history[p['round'] - 1].delta_norm:.2f}" if p["round"] else "–") + " |" for p in curve]
    (out / "report.md").write_text(markdown_report("ibau demo: BadNets on digits", before, after,
                                                   record["seconds"], lines))
    return record


def _card(model, what: str, trigger, seed: int) -> ModelCard:
    return ModelCard("small_vgg", NUM_CLASSES, [3, IMAGE_SIZE, IMAGE_SIZE],
                     metadata={"model": what, "attack": repr(trigger), "poison_ratio": 0.2, "seed": seed,
                               "dataset": f"sklearn digits {IMAGE_SIZE}x{IMAGE_SIZE}"})
