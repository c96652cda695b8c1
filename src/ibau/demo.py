"""The embedded end-to-end demo: poison digits with BadNets, train, unlearn with I-BAU, report."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from .attacks import BadNets, poison
from .data import ImageSet, load_digits
from .defenses.ibau import IBAU
from .models import ModelCard, save_model, small_vgg
from .pipeline.defend import run_defense, write_report
from .training import train_classifier
from .unlearn import IBAUConfig
from .utils import resolve_device, seeded_rng

logger = logging.getLogger(__name__)

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
             device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the whole story and write ``metrics.json``, ``report.md``, ``delta.png``, ``curve.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    cfg = (config or demo_config()).replace(seed=seed, device=str(dev))
    with seeded_rng(seed, dev):  # the global RNG (weight init) follows the seed; the caller's is restored
        train, clean, held = split_digits(seed)
        trigger = demo_trigger()
        poisoned = poison(train.images, train.labels, trigger, ratio=0.2, num_classes=NUM_CLASSES, seed=seed)
        logger.info(f"[1/4] training a small VGG on {len(train)} digits, {len(poisoned.indices)} stamped with BadNets → class 8")
        model = small_vgg(NUM_CLASSES, input_size=IMAGE_SIZE)
        t0 = time.perf_counter()
        train_classifier(model, ImageSet(poisoned.images, poisoned.labels), epochs=epochs, lr=1e-3, batch_size=64,
                         seed=seed, device=str(dev), progress=progress, desc="train (poisoned)")
        train_seconds = time.perf_counter() - t0
        save_model(model, out / "poisoned.safetensors", _card(model, "poisoned", trigger, seed))

        logger.info(f"[2/4] evaluating on {len(held)} held-out digits; [3/4] I-BAU")
        defense = IBAU(cfg)
        result, before, after = run_defense(defense, model, clean, held, trigger, NUM_CLASSES, progress=progress)
        save_model(result.model, out / "unlearned.safetensors", _card(result.model, "unlearned by I-BAU", trigger, seed))
        description = (f"Seed {seed}; {len(train)} training digits (20% BadNets poison), {len(clean)} clean digits for "
                       f"the defender, {len(held)} held-out digits for every metric.")
        record = write_report(out, "ibau demo: BadNets on digits", defense, result, before, after, trigger, tuple(held.shape),
                              {"train": train_seconds}, description,
                              {"task": f"demo: digits {IMAGE_SIZE}x{IMAGE_SIZE}, BadNets 4x4 -> 8, 20% poison, small VGG",
                               "seed": seed, "device": str(dev), "epochs": epochs,
                               "sizes": {"train": len(train), "clean": len(clean), "held_out": len(held)}})
        logger.info(f"[4/4] wrote {out}/metrics.json, report.md, delta.png, curve.png")
        return record


def _card(model, what: str, trigger, seed: int) -> ModelCard:
    return ModelCard("small_vgg", NUM_CLASSES, [3, IMAGE_SIZE, IMAGE_SIZE],
                     metadata={"model": what, "attack": trigger.spec(), "poison_ratio": 0.2, "seed": seed,
                               "dataset": f"sklearn digits {IMAGE_SIZE}x{IMAGE_SIZE}"})
