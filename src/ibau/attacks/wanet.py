"""WaNet: an imperceptible backdoor made of a fixed, smooth image warp.

Nguyen & Tran, "WaNet — Imperceptible Warping-based Backdoor Attack", ICLR 2021,
https://arxiv.org/abs/2102.10369. The trigger is a warping field: a k×k grid of random offsets,
normalised by its mean magnitude, upsampled bicubically to the image size, scaled by ``s / H`` and
added to the identity sampling grid; images are resampled through it with ``grid_sample``. In the
paper's *noise mode* another ``cross_ratio`` × (poisoned count) training images are warped by that field
plus fresh per-image random offsets and keep their true labels, so that the network learns the exact
field rather than "any warp" (:meth:`WaNet.noise`, used by :func:`ibau.attacks.poison`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Trigger


class WaNet(Trigger):
    """Warping-based trigger.

    Args:
        k: control grid size (default 4, the paper's).
        s: warp strength (default 0.5, the paper's).
        grid_rescale: scales the sampling grid, 1 keeps it (default 1).
        cross_ratio: noise-mode images per poisoned image (default 2, the paper's; 0 turns noise mode off).
        seed: seed of the control grid (default 0); the field is regenerated from it, so the spec is small.
        target: target class (default 0); all_to_all: y → (y + 1) mod C.

    Shapes: ``apply`` takes N×C×H×W images in [0, 1] with H = W.

    >>> t = WaNet(k=4, s=0.5)
    >>> x = torch.linspace(0, 1, 32).expand(2, 3, 32, 32).clone()  # a smooth image: the warp moves it by little
    >>> change = (t.apply(x) - x).abs()
    >>> bool(change.max() < 0.05), bool((change > 0).float().mean() > 0.5)  # small, yet almost everywhere
    (True, True)
    """

    name = "wanet"

    def __init__(self, k: int = 4, s: float = 0.5, grid_rescale: float = 1.0, cross_ratio: float = 2.0,
                 seed: int = 0, target: int | None = 0, all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        if k < 2:
            raise ValueError(f"WaNet k (control grid size) must be >= 2, got {k}")
        if s < 0 or grid_rescale <= 0 or cross_ratio < 0:
            raise ValueError(f"WaNet needs s >= 0, grid_rescale > 0 and cross_ratio >= 0; got s={s}, "
                             f"grid_rescale={grid_rescale}, cross_ratio={cross_ratio}")
        self.k, self.s, self.grid_rescale = int(k), float(s), float(grid_rescale)
        self.cross_ratio, self.seed = float(cross_ratio), int(seed)

    def control_grid(self) -> torch.Tensor:
        """The k×k random offsets (1×2×k×k), normalised to mean magnitude 1."""
        ins = torch.rand(1, 2, self.k, self.k, generator=torch.Generator().manual_seed(self.seed)) * 2 - 1
        return ins / ins.abs().mean()

    def grid(self, size: int) -> torch.Tensor:
        """The warped sampling grid (1×size×size×2, in [−1, 1]) for ``grid_sample``."""
        noise = F.interpolate(self.control_grid(), size=size, mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        line = torch.linspace(-1, 1, size)
        rows, cols = torch.meshgrid(line, line, indexing="ij")
        identity = torch.stack((cols, rows), dim=2)[None]  # grid_sample wants (x, y)
        return ((identity + self.s * noise / size) * self.grid_rescale).clamp(-1, 1)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[2] != x.shape[3]:
            raise ValueError(f"WaNet warps square batches shaped N×C×H×H; got shape {tuple(x.shape)}")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        grid = self.grid(x.shape[2]).to(x.device, x.dtype).expand(len(x), -1, -1, -1)
        return F.grid_sample(x, grid, align_corners=True).clamp(0, 1)

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noise-mode images: the field plus fresh random offsets (one per image), labels kept."""
        self._check(x)
        size = x.shape[2]
        extra = torch.rand(len(x), size, size, 2, generator=generator) * 2 - 1
        grid = (self.grid(size).expand(len(x), -1, -1, -1) + extra / size).clamp(-1, 1)
        return F.grid_sample(x, grid.to(x.device, x.dtype), align_corners=True).clamp(0, 1)

    def _params(self) -> dict:
        return {"k": self.k, "s": self.s, "grid_rescale": self.grid_rescale, "cross_ratio": self.cross_ratio,
                "seed": self.seed, **super()._params()}
