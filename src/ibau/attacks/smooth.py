"""Smooth: a low-frequency additive trigger (invisible in the frequency domain).

Zeng et al., "Rethinking the Backdoor Attacks' Triggers: A Frequency Perspective", ICCV 2021,
https://arxiv.org/abs/2104.03413. Ordinary triggers leave high-frequency artefacts that a frequency
detector sees; a smooth trigger lives only in the lowest spatial frequencies. Here it is seeded
Gaussian noise low-passed in the 2-D Fourier domain (frequencies above ``cutoff`` cycles per image are
zeroed) and scaled to a peak amplitude.
"""
from __future__ import annotations

import torch

from .base import PerturbationTrigger


class Smooth(PerturbationTrigger):
    """Low-pass-filtered noise added to the image.

    Args:
        cutoff: highest spatial frequency kept, in cycles per image (default 3).
        amplitude: peak |δ| after scaling, in pixel units (default 0.15).
        seed: seed of the noise (default 0).
        target: target class (default 6, the paper's); all_to_all: y → (y + 1) mod C.

    >>> d = Smooth().perturbation((3, 32, 32))
    >>> round(float(d.abs().max()), 4)
    0.15
    """

    name = "smooth"

    def __init__(self, cutoff: float = 3.0, amplitude: float = 0.15, seed: int = 0, target: int | None = 6,
                 all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        if cutoff < 1:
            raise ValueError(f"smooth cutoff must be >= 1 cycle per image, got {cutoff}")
        if not 0 < amplitude <= 1:
            raise ValueError(f"smooth amplitude must be in (0, 1], got {amplitude}")
        self.cutoff, self.amplitude, self.seed = float(cutoff), float(amplitude), int(seed)
        self._cache: dict[tuple, torch.Tensor] = {}

    def perturbation(self, shape: tuple[int, ...]) -> torch.Tensor:
        shape = tuple(shape)
        if shape not in self._cache:
            self._cache[shape] = self._make(shape)
        return self._cache[shape]

    def _make(self, shape: tuple[int, ...]) -> torch.Tensor:
        c, h, w = shape
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64)
        spec = torch.fft.rfft2(noise)
        fy = torch.fft.fftfreq(h, d=1.0 / h).abs().view(-1, 1)  # cycles per image
        fx = torch.fft.rfftfreq(w, d=1.0 / w).view(1, -1)
        keep = (fy ** 2 + fx ** 2).sqrt() <= self.cutoff
        keep[0, 0] = False  # no constant offset: the trigger is a pattern, not a brightness shift
        smooth = torch.fft.irfft2(spec * keep, s=(h, w))
        smooth = smooth * (self.amplitude / smooth.abs().max())
        return torch.round(smooth * 1e4).div(1e4).float()

    def _params(self) -> dict:
        return {"cutoff": self.cutoff, "amplitude": self.amplitude, "seed": self.seed, **super()._params()}
