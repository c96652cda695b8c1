"""Poisoning a training set: stamp a seeded fraction of it and relabel those images."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Trigger


@dataclass
class PoisonedSet:
    """A poisoned copy of a training set. ``indices`` are the rows that were stamped and relabelled;
    ``component[i]`` says which of ``trigger.components()`` stamped ``indices[i]``; ``noise_indices`` are
    the rows changed by a trigger's noise mode (:meth:`Trigger.noise`) that kept their true labels."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    component: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    noise_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))


def poison(images: torch.Tensor, labels: torch.Tensor, trigger: Trigger, ratio: float,
           num_classes: int, seed: int = 0) -> PoisonedSet:
    """Stamp ``round(ratio · N)`` images drawn (seeded) from the non-target classes and relabel them.

    The inputs are left untouched. ``ratio`` is a fraction of the whole training set (the paper's 20% is
    0.2). A multi-trigger attack splits it evenly between its triggers, on disjoint images, each drawn
    from the classes other than that trigger's target. A trigger with a noise mode (WaNet) then changes
    ``cross_ratio`` × its count of further images, drawn from any class, keeping their labels. A
    clean-label trigger (hidden trigger) crafts its own poisons instead and keeps their labels.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"poison ratio must be in [0, 1], got {ratio}")
    parts = trigger.components()
    gen = torch.Generator().manual_seed(seed)
    x, y = images.clone(), labels.clone()
    taken = torch.zeros(len(labels), dtype=torch.bool)
    chosen_all, owner = [], []
    for k, part in enumerate(parts):
        if part.poisoning == "craft":  # crafted poisons with their true labels (hidden trigger)
            chosen, crafted = part.craft(images, labels, gen)
            if bool(taken[chosen].any()):
                raise ValueError(f"{part.name}'s poisons overlap another trigger's images; combine it with fewer triggers")
            taken[chosen] = True
            x[chosen] = crafted.to(x.dtype)
            chosen_all.append(chosen)
            owner.append(torch.full((len(chosen),), k, dtype=torch.int64))
            continue
        count = int(round(ratio * len(labels) / len(parts)))
        eligible = torch.nonzero(part.victims(labels) & ~taken).flatten()
        if count > len(eligible):
            raise ValueError(f"poison ratio {ratio} needs {count} images for {part.name} but only {len(eligible)} "
                             "non-target images are left; lower the ratio")
        chosen = eligible[torch.randperm(len(eligible), generator=gen)[:count]].sort().values
        taken[chosen] = True
        if count:
            x[chosen] = part.apply(images[chosen])
            y[chosen] = part.target_labels(labels[chosen], num_classes)
        chosen_all.append(chosen)
        owner.append(torch.full((count,), k, dtype=torch.int64))
    noise_all = []
    for part, chosen in zip(parts, chosen_all):
        extra = int(round(part.cross_ratio * len(chosen)))
        if extra == 0:  # triggers without a noise mode have cross_ratio 0
            continue
        free = torch.nonzero(~taken).flatten()
        if extra > len(free):
            raise ValueError(f"{part.name}'s noise mode needs {extra} more images but only {len(free)} are left; "
                             "lower the poison ratio or cross_ratio")
        picked = free[torch.randperm(len(free), generator=gen)[:extra]].sort().values
        taken[picked] = True
        noisy = part.noise(images[picked], gen)
        assert noisy is not None, f"{part.name} has cross_ratio > 0 but no noise mode"
        x[picked] = noisy
        noise_all.append(picked)
    indices, order = torch.cat(chosen_all).sort()
    noise = torch.cat(noise_all).sort().values if noise_all else torch.empty(0, dtype=torch.int64)
    return PoisonedSet(x, y, indices, torch.cat(owner)[order], noise)
