"""Blend: mix a fixed image into the input, x' = (1 − α)·x + α·p.

Chen et al., "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning", 2017,
https://arxiv.org/abs/1712.05526. The I-BAU paper blends a cartoon image; no image can be downloaded
here, so the default pattern is generated (seeded uniform noise, as in Chen et al.'s random-pattern
variant). Any user image can be given instead.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import AdditiveTrigger


class Blend(AdditiveTrigger):
    """Blended-pattern trigger.

    Args:
        alpha: blend weight α in (0, 1] (default 0.2).
        image: optional path to an image file (any size; resized to the input) or a C×H×W tensor in
            [0, 1]; default None: seeded uniform noise.
        seed: seed of the generated pattern (default 0).
        target: target class (default 1, the paper's CIFAR-10 target); all_to_all: y → (y + 1) mod C.

    >>> Blend(alpha=0.2).apply(torch.zeros(1, 3, 8, 8)).max().item() <= 0.2
    True
    """

    name = "blend"

    def __init__(self, alpha: float = 0.2, image: str | Path | torch.Tensor | None = None, seed: int = 0,
                 target: int | None = 1, all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Blend alpha must be in (0, 1], got {alpha}")
        self.alpha, self.seed = float(alpha), int(seed)
        self.image = _read_image(image) if isinstance(image, (str, Path)) else image
        self.source = str(image) if isinstance(image, (str, Path)) else ("tensor" if image is not None else "noise")

    def pattern(self, shape: tuple[int, ...]) -> torch.Tensor:
        c, h, w = shape
        if self.image is None:
            return torch.rand(shape, generator=torch.Generator().manual_seed(self.seed))
        img = self.image.float()
        if img.shape[0] != c:
            img = img.mean(0, keepdim=True).expand(c, -1, -1) if c in (1, 3) else img
        if tuple(img.shape[1:]) != (h, w):
            img = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        return img.clamp(0, 1)

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.full(shape, self.alpha)

    def _params(self) -> dict:
        image = None if self.source == "noise" else self.source
        return {"alpha": self.alpha, "image": image, "seed": self.seed, **super()._params()}

    def spec(self) -> dict:
        if self.source == "tensor":
            raise ValueError("a Blend trigger built from a tensor cannot be written down; save the image and pass its path")
        return super().spec()


def _read_image(path: str | Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise ValueError(f"blend image {path} does not exist")
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
