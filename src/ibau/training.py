"""Plain supervised training and fine-tuning, shared by the demo, the attacks and the baselines."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from .data.arrays import ImageSet
from .utils import resolve_device

#: The training recipes of poisoned models, defined once: ``ibau attack --preset`` and the grid's presets
#: (``ibau.bench.suites``) read them. The paper's (all 50,000 CIFAR-10 images, 50 epochs) and the CPU
#: budget of docs/results.md.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {"epochs": 50, "train_limit": None},
    "cpu": {"epochs": 12, "train_limit": 20000},
}


def recipe(name: str, **overrides: Any) -> dict[str, Any]:
    """A training recipe with explicit (non-None) overrides applied.

    >>> recipe("cpu", epochs=3)
    {'epochs': 3, 'train_limit': 20000}
    """
    if name not in RECIPES:
        raise ValueError(f"unknown training preset {name!r}; choose one of: {', '.join(RECIPES)}")
    return {**RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}}

#: Learning-rate schedules of :func:`train_classifier`.
LR_SCHEDULES = ("constant", "cosine")
#: Training-time augmentations of :func:`train_classifier`.
AUGMENTATIONS = ("none", "flip_crop")
#: The augmentations :func:`augment_images` applies (FT-SAM's ``augment``, I-BAU's ``outer_augment``).
CROPS = ("none", "crop", "flip_crop")


def _check_choice(option: str, name: str, choices: tuple[str, ...]) -> None:
    if name not in choices:
        raise ValueError(f"unknown {option} {name!r}; choose one of {', '.join(choices)}")


def check_lr_schedule(name: str) -> None:
    _check_choice("lr_schedule", name, LR_SCHEDULES)


def check_augment(name: str) -> None:
    _check_choice("augment", name, AUGMENTATIONS)


def flip_crop(x: torch.Tensor, generator: torch.Generator | None, padding: int | None = None) -> torch.Tensor:
    """The standard CIFAR augmentation, drawn per image from ``generator``: :func:`random_crop` (zero-pad by
    ``padding``, default an eighth of the height, at least 1, i.e. 4 pixels at 32x32, and crop back to the original
    size at a random offset), then mirror left-right with probability 1/2. ``x``: N×C×H×W; returns a new tensor."""
    out = random_crop(x, generator, padding)
    flips = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    out[flips] = TF.horizontal_flip(out[flips])
    return out


def random_crop(x: torch.Tensor, generator: torch.Generator | None, padding: int | None = None) -> torch.Tensor:
    """Zero-pad N×C×H×W images by ``padding`` (default: an eighth of the height, at least 1) and crop each back
    to H×W at an offset drawn from ``generator``; returns a new tensor."""
    n, _, h, w = x.shape
    padding = max(1, h // 8) if padding is None else padding
    padded = F.pad(x, [padding] * 4)
    tops = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, 2 * padding + 1, (n,), generator=generator).tolist()
    return torch.stack([padded[i, :, t:t + h, s:s + w] for i, (t, s) in enumerate(zip(tops, lefts))])


def augment_images(x: torch.Tensor, name: str, generator: torch.Generator | None,
                   padding: int | None = None) -> torch.Tensor:
    """``x`` augmented by ``name``, one of :data:`CROPS`: ``"crop"`` (:func:`random_crop`), ``"flip_crop"``
    (:func:`flip_crop`) or ``"none"`` (``x`` itself)."""
    _check_choice("augmentation", name, CROPS)
    if name == "none":
        return x
    return (random_crop if name == "crop" else flip_crop)(x, generator, padding)


def iterate_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    generator: torch.Generator | None = None, shuffle: bool = True, extra: tuple = ()):
    """Yield ``(images, labels)`` minibatches (on the tensors' device); shuffled with ``generator``. ``extra``:
    more per-image tensors whose rows follow each batch's, yielded after the labels (the same draws)."""
    for idx in iterate_rows(len(labels), batch_size, generator, shuffle):
        idx = idx.to(images.device)
        yield (images[idx], labels[idx], *(t[idx] for t in extra))


def cycle_batches(batches, steps: int):
    """Yield ``steps`` batches from ``batches()`` (a function returning one pass's iterator), starting another
    pass whenever one ends: the δ searches and the θ steps of I-BAU take more steps than a small set has batches."""
    done = 0
    while done < steps:
        for batch in batches():
            yield batch
            done += 1
            if done == steps:
                return


def iterate_rows(n: int, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True):
    """Yield the row indices of each minibatch of ``n`` rows, shuffled with ``generator``."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def train_classifier(model: nn.Module, data: ImageSet, epochs: int = 10, lr: float = 1e-3,
                     batch_size: int = 128, seed: int = 0, device: str | None = None,
                     weight_decay: float = 0.0, progress: bool = True, desc: str = "train",
                     on_epoch: Callable[..., None] | None = None, resume: dict | None = None,
                     lr_schedule: str = "constant", trainable: list[nn.Parameter] | None = None,
                     augment: str = "none",
                     stamp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> nn.Module:
    """Train ``model`` in place with Adam and cross-entropy; returns it in eval mode.

    ``lr_schedule``: ``"constant"`` (default) keeps ``lr``; ``"cosine"`` anneals it per step from ``lr`` to 0
    over all ``epochs`` (a model that is still underfitting at the end of a short budget fits better when the
    step size shrinks). The rate is a function of the step index, so a resumed run follows the same curve.
    ``trainable``: train only these parameters (fine-tuning); layers whose own weights are all frozen stay
    in eval mode, so their batch-norm statistics do not move either.
    ``augment``: ``"none"`` (default) or ``"flip_crop"`` (:func:`flip_crop` on every batch, drawn from the
    seeded shuffling generator). ``stamp(x, rows)``, if given, runs after the augmentation on the batch
    ``x`` of training rows ``rows``: a poisoned set re-applies its triggers there, so a patch stays where the
    attack put it instead of moving with the crop and the flip.

    ``on_epoch(epoch, mean_loss, state)`` is called after each epoch; ``state`` (next epoch, optimizer
    state, shuffling generator and CPU RNG states) is what ``resume`` takes back, together with the model's weights,
    so an interrupted run continues exactly where it stopped.
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    check_lr_schedule(lr_schedule)
    check_augment(augment)
    dev = resolve_device(device)
    params = list(model.parameters()) if trainable is None else list(trainable)
    keep = {id(p) for p in params}
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    model.to(dev).train()
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if own and not any(id(p) in keep for p in own):
            m.eval()  # a frozen layer keeps its batch-norm statistics too
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    start = 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        gen.set_state(resume["generator"])
        torch.set_rng_state(resume["rng"])  # dropout masks continue as in an uninterrupted run
        start = int(resume["epoch"])
    per_epoch = (len(data) + batch_size - 1) // batch_size
    bar = tqdm(total=max((epochs - start) * per_epoch, 0), desc=desc, disable=not progress, leave=False)
    for epoch in range(start, epochs):
        total, count = 0.0, 0
        for i, rows in enumerate(iterate_rows(len(data), batch_size, gen)):
            if lr_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (epoch * per_epoch + i) / (epochs * per_epoch)))
            rows = rows.to(data.images.device)
            x, y = data.images[rows], data.labels[rows]
            if augment == "flip_crop":
                x = flip_crop(x, gen)
            if stamp is not None:
                x = stamp(x, rows)
            x, y = x.to(dev), y.to(dev)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
            bar.update(1)
        bar.set_postfix(loss=f"{total / count:.3f}")
        if on_epoch is not None:
            state = {"epoch": epoch + 1, "optimizer": opt.state_dict(), "generator": gen.get_state(),
                     "rng": torch.get_rng_state()}
            on_epoch(epoch, total / count, state)
    bar.close()
    for p, flag in zip(model.parameters(), flags):
        p.requires_grad_(flag)
    return model.eval()
