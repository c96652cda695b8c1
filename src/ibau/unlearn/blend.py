"""A blended trigger search (``IBAUConfig.blend_search``): the trigger one additive δ cannot be.

Blend (Chen et al., 2017, arXiv:1712.05526) and Trojan WM stamp ``x' = (1 − α)·x + α·p``: every pixel moves in
proportion to the image, which no universal additive δ reproduces. On GTSRB the default's δ leaves 8-29% ASR on
Blend and more on Trojan WM (issue 17's records). A pattern learnt per class *in the blend's own form* singles
the target out: on issue 17's GTSRB Blend model, (1 − 0.1)·x + 0.1·p_t sends 100% of the clean images to the
target and at most 67.8% to any other class (stop 54's diagnostic, docs/presets.md).

So the search here is a targeted one, like the smooth search (:mod:`ibau.unlearn.smooth`): for each class a
pattern ``p = sigmoid(w)`` in [0, 1] is learnt by a few Adam steps on CE(f((1 − α)·x + α·p), class); the class
whose pattern sends the most clean images to it is kept, and its pattern searched for a whole pass. The rows
that carry it in the θ steps keep their true labels. A defender's search: clean images only, no trigger.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..training import cycle_batches
from .config import IBAUConfig
from .distributed import SINGLE, Ranks
from .inner import screened_search, sent_rate

#: Adam's step size on the pattern's logits: the pattern lives in [0, 1] through a sigmoid.
BLEND_LR = 0.1


def blend(x: torch.Tensor, pattern: torch.Tensor, alpha: float) -> torch.Tensor:
    """(1 − α)·x + α·pattern: ``x`` (N×C×H×W) blended with one pattern (C×H×W) in [0, 1]."""
    return (1 - alpha) * x + alpha * pattern


def blend_pattern(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                  like: torch.Tensor, target: int, alpha: float, steps: int, *, start: torch.Tensor | None = None,
                  ranks: Ranks = SINGLE) -> torch.Tensor:
    """The logits ``w`` of a pattern sigmoid(w) that, blended at ``alpha``, sends clean images to ``target``:
    ``steps`` Adam steps (:data:`BLEND_LR`) on CE(f(blend(x, sigmoid(w), α)), target) from w = 0 (a grey
    pattern) or from ``start``. ``like``: one image (the pattern's shape, dtype and device). Across ``ranks``
    each rank scores its share of every batch and the gradient is summed over the ranks."""
    logits = (torch.zeros_like(like) if start is None else start.detach().clone()).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=BLEND_LR)
    for x_all, _ in cycle_batches(batches, steps):
        x = ranks.shard(x_all)
        wanted = torch.full((len(x),), target, device=x.device, dtype=torch.int64)
        out = ranks.forward(model, blend(x, torch.sigmoid(logits), alpha))
        loss = ranks.cross_entropy(out, wanted, len(x_all))
        (logits.grad,) = ranks.all_reduce_sum(*torch.autograd.grad(loss, logits))
        opt.step()
    return logits.detach()


def blend_rate(model: nn.Module, x: torch.Tensor, before: torch.Tensor, pattern: torch.Tensor, alpha: float,
               target: int, *, ranks: Ranks = SINGLE) -> float:
    """The share of the images of ``x`` not predicted as ``target`` (``before``: the predictions on this rank's
    share) that blending with ``pattern`` sends to ``target``; the counts are summed over ``ranks``."""
    return sent_rate(model, x, before, lambda images: blend(images, pattern, alpha), target, ranks=ranks)


def standout(rates: list[float]) -> float:
    """How far the screen's kept class stands out: its rate minus the median of the other classes' rates (shares
    of the clean images). The median, not the runner-up: a model with two blended backdoors has two classes far
    above the rest (CIFAR-10's seven triggers: 96.1 and 92.2% against a median of 37.4%)."""
    ordered = sorted(rates, reverse=True)
    return ordered[0] - statistics.median(ordered[1:])


def also_classes(rates: list[float], kept: int, bar: float) -> list[int]:
    """The classes other than ``kept`` whose screen rate exceeds the median of the other classes' rates by at least
    ``bar`` (``blend_also``), the highest rate first (ties: the lowest class). A model with several blended backdoors
    has several such classes (CIFAR-10's seven triggers: 96 and 92% against a median of 37%); one backdoor's
    runner-up stands out by 11-23 points on the development and confirmation models (docs/presets.md, stop 59).

    >>> also_classes([0.2, 0.9, 0.3, 0.95, 0.25], kept=3, bar=0.3)
    [1]
    """
    def stands_out(c: int) -> float:
        return rates[c] - statistics.median(r for i, r in enumerate(rates) if i != c)

    return sorted((c for c in range(len(rates)) if c != kept and stands_out(c) >= bar), key=lambda c: (-rates[c], c))


def blend_trigger(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                  x: torch.Tensor, cfg: IBAUConfig, steps: int, num_classes: int, *, target: int | None = None,
                  ranks: Ranks = SINGLE, before: torch.Tensor | None = None,
                  notes: dict | None = None) -> tuple[torch.Tensor, int, float]:
    """This round's blended pattern: ``(pattern, class, rate)``, the pattern in [0, 1], blended at
    ``cfg.blend_search``. With ``target`` None every class is screened for ``cfg.blend_screen`` steps and the one
    whose pattern sends the largest share of the first :data:`~ibau.unlearn.inner.SCREEN_SAMPLE` images of ``x``
    to it is continued; otherwise ``target``'s pattern is searched from grey. Either way it gets ``steps`` steps
    in all, and its rate is measured on ``x``. ``before``: the model's predictions on this rank's share of ``x``
    when the caller has them. ``notes`` (a dict, when given) gets the screen's rate of every class (``rates``):
    how far the kept class stands out is the evidence that a blended backdoor is there at all. With
    ``cfg.blend_gate`` set, a screen whose kept class does not stand out by that much (:func:`standout`) ends
    the search there: ``notes["gated"]`` is True and the screen's pattern and rate are returned."""
    alpha = cfg.blend_search
    if alpha is None:
        raise ValueError("blend_trigger needs cfg.blend_search (the blend's α, e.g. 0.1)")

    def search(c: int, n: int, start: torch.Tensor | None) -> torch.Tensor:
        return blend_pattern(model, batches, x[0], c, alpha, n, start=start, ranks=ranks)

    def rate(logits: torch.Tensor, c: int, images: torch.Tensor, predicted: torch.Tensor) -> float:
        return blend_rate(model, images, predicted, torch.sigmoid(logits), alpha, c, ranks=ranks)

    bar = cfg.blend_gate
    gate = None if bar is None else (lambda rates: standout(rates) >= bar)
    logits, target, sent = screened_search(search, rate, model, x, steps, cfg.blend_screen, num_classes,
                                           target=target, ranks=ranks, before=before, notes=notes, gate=gate)
    return torch.sigmoid(logits), target, sent
