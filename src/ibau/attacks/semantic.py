"""Semantic replacement (SR): the trigger is one whole out-of-distribution image.

The I-BAU paper's appendix (after Zeng et al.'s data-replacement attack): poisoned training images are
replaced by a single fixed image that belongs to no class, labelled with the target; at test time that
image itself is the input. It is not an additive trigger, so I-BAU needs an unbounded δ (``norm="none"``
with pixel clamping) to represent "replace the image". The default image is generated (seeded coloured
discs and bars on a coloured background, nothing like the dataset); any user image can be given.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .base import Trigger
from .blend import _read_image


class SemanticReplacement(Trigger):
    """Replace the whole input by one fixed image.

    Args:
        image: path to an image file (any size; resized) or None (default) for a generated one.
        seed: seed of the generated image (default 0).
        target: target class (default 0, the paper's); all_to_all: y → (y + 1) mod C.

    >>> t = SemanticReplacement()
    >>> out = t.apply(torch.rand(3, 3, 16, 16))
    >>> bool((out == out[0]).all())
    True
    """

    name = "sr"

    def __init__(self, image: str | Path | None = None, seed: int = 0, target: int | None = 0,
                 all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        self.seed = int(seed)
        self.source = None if image is None else str(image)
        if image is not None and not Path(image).exists():
            raise ValueError(f"semantic replacement image {image} does not exist; give an image file or none for the generated one")
        self._image = None if image is None else _read_image(image)

    def replacement(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The replacement image (C×H×W in [0, 1])."""
        c, h, w = shape
        if self._image is None:
            return _generated(shape, self.seed)
        img = self._image
        if img.shape[0] != c:
            img = img.mean(0, keepdim=True).expand(c, -1, -1)
        return F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"triggers stamp batches shaped N×C×H×W; got shape {tuple(x.shape)}")
        return self.replacement(tuple(x.shape[1:])).to(x.device, x.dtype).expand_as(x).clone()

    def _params(self) -> dict:
        return {"image": self.source, "seed": self.seed, **super()._params()}


def _generated(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded synthetic image: a saturated background with 3 discs and 2 bars of random colours."""
    c, h, w = shape
    g = torch.Generator().manual_seed(seed)
    colour = lambda: torch.rand(c, 1, 1, generator=g).round().clamp(0.1, 0.9) * 0.8 + torch.rand(c, 1, 1, generator=g) * 0.2  # noqa: E731
    img = colour().expand(c, h, w).clone()
    rows = torch.arange(h).view(h, 1).float()
    cols = torch.arange(w).view(1, w).float()
    for _ in range(3):
        cy, cx = (torch.rand(2, generator=g) * torch.tensor([h, w])).tolist()
        r = float(torch.rand(1, generator=g)) * min(h, w) / 4 + min(h, w) / 8
        inside = ((rows - cy) ** 2 + (cols - cx) ** 2) <= r * r
        img = torch.where(inside, colour().expand(c, h, w), img)
    for _ in range(2):
        top = int(torch.randint(0, max(1, h - h // 6), (1,), generator=g))
        img[:, top:top + max(1, h // 8), :] = colour()[:, :, 0:1].expand(c, 1, 1)
    return img.clamp(0, 1)
