"""The paper's protocol: the defender's clean set comes from the test split, evaluation uses the rest."""
from __future__ import annotations

import torch

from .arrays import ImageSet


def defender_split(test: ImageSet, clean_size: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split a test set into ``(clean, held_out)``: ``clean_size`` seeded random images for the defender,
    the disjoint remainder for evaluation."""
    if not 0 < clean_size < len(test):
        raise ValueError(f"clean size must be between 1 and {len(test) - 1} (the test split has {len(test)} images), got {clean_size}")
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))
    return test.subset(perm[:clean_size]), test.subset(perm[clean_size:])
