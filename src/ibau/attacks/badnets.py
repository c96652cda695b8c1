"""BadNets: a small white square near the bottom-right corner.

Gu et al., "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain", 2017,
https://arxiv.org/abs/1708.06733. Placement follows the I-BAU authors' code: a ``size``×``size``
square, ``margin`` pixels from the bottom and right edges.
"""
from __future__ import annotations

import torch

from .base import AdditiveTrigger


class BadNets(AdditiveTrigger):
    """White-square trigger.

    Args:
        size: side of the square in pixels (default 4).
        margin: gap to the bottom and right edges in pixels (default 1).
        value: pixel value of the square in [0, 1] (default 1.0, white).
        target: target class for one-to-one poisoning (default 8, the paper's CIFAR-10 target).
        all_to_all: send label y to (y + 1) mod C instead of one target (default False).

    >>> trig = BadNets(size=4, target=8)
    >>> trig.apply(torch.zeros(2, 3, 32, 32))[0, :, 27:31, 27:31].min().item()
    1.0
    """

    name = "badnets"

    def __init__(self, size: int = 4, margin: int = 1, value: float = 1.0, target: int | None = 8,
                 all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        if size < 1 or margin < 0:
            raise ValueError(f"BadNets needs size >= 1 and margin >= 0, got size={size}, margin={margin}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"BadNets value must be a pixel value in [0, 1], got {value}")
        self.size, self.margin, self.value = int(size), int(margin), float(value)

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        c, h, w = shape
        if self.size + self.margin > min(h, w):
            raise ValueError(f"a {self.size}px BadNets square with margin {self.margin} does not fit {h}x{w} images")
        m = torch.zeros(c, h, w)
        lo_h, lo_w = h - self.margin - self.size, w - self.margin - self.size
        m[:, lo_h:h - self.margin, lo_w:w - self.margin] = 1.0
        return m

    def pattern(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.full(shape, self.value)

    def _params(self) -> dict:
        return {"size": self.size, "margin": self.margin, "value": self.value, **super()._params()}
