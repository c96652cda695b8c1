"""Poisoning a training set: stamp a seeded fraction of it and relabel those images."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import Trigger


@dataclass
class PoisonedSet:
    """A poisoned copy of a training set. ``indices`` are the rows that were stamped and relabelled;
    ``component[i]`` says which of ``trigger.components()`` stamped ``indices[i]``."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    component: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))


def poison(images: torch.Tensor, labels: torch.Tensor, trigger: Trigger, ratio: float,
           num_classes: int, seed: int = 0) -> PoisonedSet:
    """Stamp ``round(ratio · N)`` images drawn (seeded) from the non-target classes and relabel them.

    The inputs are left untouched. ``ratio`` is a fraction of the whole training set (the paper's 20% is
    0.2). A multi-trigger attack splits it evenly between its triggers, on disjoint images, each drawn
    from the classes other than that trigger's target.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"poison ratio must be in [0, 1], got {ratio}")
    parts = trigger.components()
    gen = torch.Generator().manual_seed(seed)
    x, y = images.clone(), labels.clone()
    taken = torch.zeros(len(labels), dtype=torch.bool)
    chosen_all, owner = [], []
    for k, part in enumerate(parts):
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
    indices, order = torch.cat(chosen_all).sort()
    return PoisonedSet(x, y, indices, torch.cat(owner)[order])
