"""Poisoning a training set: stamp a seeded fraction of it and relabel those images."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Trigger


@dataclass
class PoisonedSet:
    """A poisoned copy of a training set. ``indices`` are the rows that were stamped and relabelled."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


def poison(images: torch.Tensor, labels: torch.Tensor, trigger: Trigger, ratio: float,
           num_classes: int, seed: int = 0) -> PoisonedSet:
    """Stamp ``round(ratio · N)`` images drawn (seeded) from the non-target classes and relabel them.

    The inputs are left untouched. ``ratio`` is a fraction of the whole training set (the paper's 20% is 0.2).
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"poison ratio must be in [0, 1], got {ratio}")
    eligible = torch.nonzero(trigger.victims(labels)).flatten()
    count = int(round(ratio * len(labels)))
    if count > len(eligible):
        raise ValueError(f"poison ratio {ratio} needs {count} non-target images but only {len(eligible)} exist; lower the ratio")
    gen = torch.Generator().manual_seed(seed)
    chosen = eligible[torch.randperm(len(eligible), generator=gen)[:count]].sort().values
    x, y = images.clone(), labels.clone()
    if count:
        x[chosen] = trigger.apply(images[chosen])
        y[chosen] = trigger.target_labels(labels[chosen], num_classes)
    return PoisonedSet(x, y, chosen)
