"""A low-frequency trigger search (``IBAUConfig.smooth_search``): the smooth δ a pixel-space search misses.

A smooth trigger (Zeng et al., ICCV 2021, the paper's "Smooth"; BackdoorBench's "LF") lives in the lowest
spatial frequencies. I-BAU's δ is searched over every pixel, and the steepest directions of the loss there
are high-frequency: on CIFAR-10's seven-trigger model a Smooth backdoor kept 13–35% ASR through every
configuration tried while the others fell, and a pixel-space δ of ℓ2 norm 3 aimed at its target class sends
3.5% of the clean images there after two rounds. The same search restricted to frequencies of at most 3
cycles per image sends 88% there, more than to any other class (docs/presets.md, "A smooth δ").

So the search here is a targeted one, like the class search of the stamp (:func:`ibau.unlearn.inner.class_patch`):
for each class a few steps of descent on CE(f(x + δ), class), δ projected after every step onto the low
frequencies and into the ℓ2 ball; the class whose δ sends the most clean images to it is kept, and its δ
searched for a whole pass. A defender's search: clean images only, no trigger.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from .config import IBAUConfig
from .distributed import SINGLE, Ranks
from .inner import perturb, screened_search, sent_rate, targeted_delta


def lowpass(delta: torch.Tensor, cutoff: float) -> torch.Tensor:
    """The orthogonal projection of δ (C×H×W) onto the spatial frequencies of at most ``cutoff`` cycles per
    image (the constant included): zero the others of its 2-D Fourier transform, per channel."""
    h, w = delta.shape[-2:]
    fy = torch.fft.fftfreq(h, d=1.0 / h, device=delta.device).abs().view(-1, 1)
    fx = torch.fft.rfftfreq(w, d=1.0 / w, device=delta.device).view(1, -1)
    keep = (fy.pow(2) + fx.pow(2)).sqrt() <= cutoff
    return torch.fft.irfft2(torch.fft.rfft2(delta) * keep, s=(h, w)).to(delta.dtype)


def smooth_delta(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                 like: torch.Tensor, target: int, cfg: IBAUConfig, steps: int, *, start: torch.Tensor | None = None,
                 ranks: Ranks = SINGLE) -> torch.Tensor:
    """A smooth universal δ that sends clean images to ``target``: ``steps`` descent steps (the inner optimiser
    and step size) on CE(f(clamp(x + δ)), target), each followed by :func:`lowpass` at ``cfg.smooth_cutoff`` and
    the projection into the ℓ2 ball of radius ``cfg.smooth_search``: the class search's
    :func:`~ibau.unlearn.inner.targeted_delta` without its penalties. ``like``: one image (δ's shape, dtype and
    device); ``start``: continue from this δ. Across ``ranks`` each rank scores its share of every batch and
    δ's gradient is summed over the ranks."""
    search = cfg.replace(clamp=True, inner_penalty=0.0, patch_l1=0.0)
    return targeted_delta(model, batches, like, target, search, steps, bound=cfg.smooth_search, start=start,
                          ranks=ranks, constrain=lambda d: lowpass(d, cfg.smooth_cutoff))


def smooth_rate(model: nn.Module, x: torch.Tensor, before: torch.Tensor, delta: torch.Tensor, target: int, *,
                ranks: Ranks = SINGLE) -> float:
    """The share of the images of ``x`` not predicted as ``target`` (``before``: the predictions on this rank's
    share) that clamp(x + δ) sends to ``target``; the counts are summed over ``ranks``."""
    return sent_rate(model, x, before, lambda images: perturb(images, delta, True), target, ranks=ranks)


def smooth_trigger(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                   x: torch.Tensor, cfg: IBAUConfig, steps: int, num_classes: int, *, target: int | None = None,
                   ranks: Ranks = SINGLE, before: torch.Tensor | None = None) -> tuple[torch.Tensor, int, float]:
    """This round's smooth δ: ``(δ, class, rate)``. With ``target`` None every class is screened for
    ``cfg.smooth_screen`` steps and the one whose δ sends the largest share of the first
    :data:`~ibau.unlearn.inner.SCREEN_SAMPLE` images of ``x`` to it is continued; otherwise ``target``'s δ is
    searched from 0. Either way the δ gets ``steps`` steps in all, and its rate is measured on ``x``.
    ``before``: the model's predictions on this rank's share of ``x`` when the caller has them."""
    def search(c: int, n: int, start: torch.Tensor | None) -> torch.Tensor:
        return smooth_delta(model, batches, x[0], c, cfg, n, start=start, ranks=ranks)

    def rate(delta: torch.Tensor, c: int, images: torch.Tensor, predicted: torch.Tensor) -> float:
        return smooth_rate(model, images, predicted, delta, c, ranks=ranks)

    return screened_search(search, rate, model, x, steps, cfg.smooth_screen, num_classes, target=target,
                           ranks=ranks, before=before)
