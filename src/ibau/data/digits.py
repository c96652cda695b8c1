"""The embedded default: scikit-learn's 8×8 handwritten digits (ships with scikit-learn, no download)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .arrays import ImageSet


def load_digits(size: int = 16, channels: int = 3) -> ImageSet:
    """All 1,797 digits as ``channels``×``size``×``size`` images in [0, 1] (ink bright, background dark).

    The 8×8 originals (values 0..16) are upsampled bilinearly; the grey value is repeated over channels so
    that models and triggers built for RGB images apply unchanged.
    """
    from sklearn.datasets import load_digits as _sk_load

    if size < 8:
        raise ValueError(f"digits size must be >= 8 pixels, got {size}")
    bunch = _sk_load()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    x = x.repeat(1, channels, 1, 1).contiguous()
    return ImageSet(x, torch.tensor(bunch.target, dtype=torch.int64))
