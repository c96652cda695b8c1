"""Trojan square and Trojan watermark: TrojanNN triggers.

Liu et al., "Trojaning Attack on Neural Networks", NDSS 2018, https://doi.org/10.14722/ndss.2018.23291.
The trigger's *shape* is fixed (a square patch, or a watermark-like mask) and its *pixel values* inside
the shape are optimised so that stamped images excite chosen neurons of a reference model (see
:mod:`ibau.attacks.excite`). Stamping blends the pattern through the mask:
``x' = (1 − α·m)·x + α·m·p``. The I-BAU authors use a 9×9 square and a watermark of ≈ 320 pixels.
"""
from __future__ import annotations

import torch

from .base import AdditiveTrigger, as_list, check_shape, quantise
from .excite import excite


class _Trojan(AdditiveTrigger):
    needs_reference = True

    def __init__(self, pattern=None, alpha: float = 1.0, target: int | None = 2, all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        if not 0 < alpha <= 1:
            raise ValueError(f"{self.name} alpha must be in (0, 1], got {alpha}")
        self.alpha = float(alpha)
        self.stored = quantise(pattern, f"{self.name} pattern")
        if float(self.stored.min()) < 0 or float(self.stored.max()) > 1:
            raise ValueError(f"{self.name} pattern values must be pixel values in [0, 1]")
        self.shape_mask(*self.stored.shape[1:])  # fails early if the shape does not fit

    def shape_mask(self, h: int, w: int) -> torch.Tensor:
        """The trigger's footprint (H×W of 0/1)."""
        raise NotImplementedError

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        check_shape(self, self.stored, shape)
        return (self.alpha * self.shape_mask(*shape[1:])).expand(*shape).clone()

    def pattern(self, shape: tuple[int, ...]) -> torch.Tensor:
        check_shape(self, self.stored, shape)
        return self.stored

    @classmethod
    def generate(cls, model=None, images=None, seed: int = 0, steps: int = 200, lr: float = 0.05,
                 neurons: int = 2, **kwargs) -> _Trojan:
        if model is None or images is None:
            raise ValueError(f"{cls.name} is optimised against a reference model: pass model and images to "
                             "generate() (CLI: --reference-model)")
        shape = tuple(images.shape[1:])
        probe = cls(pattern=torch.full(shape, 0.5), **kwargs)
        m = probe.mask(shape)
        init = (0.5 + 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
        pattern = excite(model, images, init, lambda x, p: (1 - m.to(x.device)) * x + m.to(x.device) * p,
                         lambda p: p.clamp(0, 1), neurons=neurons, steps=steps, lr=lr, seed=seed)
        return cls(pattern=pattern, **kwargs)

    def _params(self) -> dict:
        return {"pattern": as_list(self.stored), "alpha": self.alpha, **super()._params()}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._params().items() if k != "pattern")
        footprint = int(self.shape_mask(*self.stored.shape[1:]).sum())
        return f"{type(self).__name__}(pattern=<{tuple(self.stored.shape)} in a {footprint}-px mask>, {shown})"


class TrojanSquare(_Trojan):
    """Optimised square patch near the bottom-right corner.

    Args:
        pattern: generated pixel values (C×H×W; only the square is used); build it with :meth:`generate`.
        size: side of the square (default 9); margin: gap to the bottom/right edges (default 1).
        alpha: opacity (default 1.0: the patch replaces the pixels).
        target: target class (default 2, the paper's); all_to_all: y → (y + 1) mod C.

    ``generate(model, images, seed=0, steps=200, lr=0.05, neurons=2, size=9, ...)``.

    >>> from ibau.models import small_vgg
    >>> trig = TrojanSquare.generate(small_vgg(10), torch.rand(8, 3, 32, 32), steps=5)
    >>> int(trig.mask((3, 32, 32))[0].sum())
    81
    """

    name = "trojan_sq"

    def __init__(self, pattern=None, size: int = 9, margin: int = 1, alpha: float = 1.0,
                 target: int | None = 2, all_to_all: bool = False):
        if size < 1 or margin < 0:
            raise ValueError(f"trojan_sq needs size >= 1 and margin >= 0, got size={size}, margin={margin}")
        self.size, self.margin = int(size), int(margin)
        super().__init__(pattern=pattern, alpha=alpha, target=target, all_to_all=all_to_all)

    def shape_mask(self, h: int, w: int) -> torch.Tensor:
        if self.size + self.margin > min(h, w):
            raise ValueError(f"a {self.size}px square with margin {self.margin} does not fit {h}x{w} images")
        m = torch.zeros(1, h, w)
        m[:, h - self.margin - self.size:h - self.margin, w - self.margin - self.size:w - self.margin] = 1
        return m

    def _params(self) -> dict:
        return {"size": self.size, "margin": self.margin, **super()._params()}


class TrojanWatermark(_Trojan):
    """Optimised watermark: a ring with a cross inside, centred, blended at opacity ``alpha``.

    At 32×32 the mask covers 320 pixels (the authors' watermark has ≈ 320); it scales with the image.

    Args:
        pattern: generated pixel values (C×H×W); build it with :meth:`generate`.
        alpha: opacity (default 0.5, which puts the stamped change near the authors' ℓ2 ≈ 8.7).
        target: target class (default 2, the paper's); all_to_all: y → (y + 1) mod C.

    ``generate(model, images, seed=0, steps=200, lr=0.05, neurons=2, ...)``.

    >>> from ibau.models import small_vgg
    >>> trig = TrojanWatermark.generate(small_vgg(10), torch.rand(8, 3, 32, 32), steps=5)
    >>> int((trig.mask((3, 32, 32))[0] > 0).sum())
    320
    """

    name = "trojan_wm"

    def __init__(self, pattern=None, alpha: float = 0.5, target: int | None = 2, all_to_all: bool = False):
        super().__init__(pattern=pattern, alpha=alpha, target=target, all_to_all=all_to_all)

    def shape_mask(self, h: int, w: int) -> torch.Tensor:
        v = (torch.arange(h) + 0.5) / h * 2 - 1
        u = (torch.arange(w) + 0.5) / w * 2 - 1
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        r = (uu ** 2 + vv ** 2).sqrt()
        ring = (r >= 0.62) & (r <= 0.78)
        cross = ((uu.abs() <= 0.1) | (vv.abs() <= 0.1)) & (r < 0.62)
        return (ring | cross).float()[None]
