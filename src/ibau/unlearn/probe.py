"""The round probe: which round's model to keep, from the clean set alone (``round_selection="probe"``).

I-BAU's rounds do not remove a backdoor monotonically: on some models the held-out ASR moves by 10–20 points
from one round to the next, in both directions (docs/presets.md, "Choosing the round"), so the round a run
stops at decides the result. A defender cannot measure the ASR: it has no trigger and no triggered images.
What it can measure is how easily a *small* perturbation still sends its clean images to one class:

1. Before the first round, :func:`suspect_class` searches one universal δ inside a small ℓ2 ball
   (``probe_bound``, below the norm of the triggers it must catch) that maximises the loss of the model's own
   predictions, as I-BAU's own search does. A backdoor makes its target the cheapest class to reach, so the
   class this δ sends the most clean images to is the suspect.
2. After every round, :func:`probe_rate` searches a δ in the same ball aimed at the suspect and returns the
   share of clean images it sends there. The model kept is the latest round's whose share is within
   ``probe_tolerance`` of the lowest (the rule is in :func:`ibau.unlearn.unlearn`).

Both use clean images only; the triggers' norms enter only through the choice of ``probe_bound``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from .config import IBAUConfig
from .distributed import SINGLE, Ranks
from .inner import solve_delta, targeted_delta


def _probe_config(cfg: IBAUConfig) -> IBAUConfig:
    """The probe's δ search: the run's step size and optimiser, inside the ℓ2 ball ``probe_bound``, no ℓ1."""
    return cfg.replace(norm="l2", norm_bound=cfg.probe_bound, pseudo_labels=False, patch_l1=0.0, clamp=False)


def suspect_class(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                  x: torch.Tensor, cfg: IBAUConfig, num_classes: int, *, ranks: Ranks = SINGLE) -> tuple[int, float]:
    """The class a small untargeted δ sends the most of ``x`` to, and that share.

    ``batches`` yields clean images with the model's own predictions as labels; the δ takes
    ``cfg.probe_steps`` ascent steps inside the ℓ2 ball ``cfg.probe_bound``.
    """
    from .core import fooling_rates  # core imports this module
    delta, _ = solve_delta(model, batches, tuple(x.shape[1:]), _probe_config(cfg), cfg.probe_steps, ranks=ranks)
    rates = fooling_rates(model, x, delta, False, num_classes, ranks=ranks)
    top = max(range(num_classes), key=lambda c: rates[c])
    return top, rates[top]


def probe_rate(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
               x: torch.Tensor, suspect: int, cfg: IBAUConfig, num_classes: int, *, ranks: Ranks = SINGLE) -> float:
    """Share of ``x`` that a δ inside the ℓ2 ball ``cfg.probe_bound``, aimed at ``suspect`` by
    ``cfg.probe_steps`` descent steps, sends to ``suspect`` (the lower, the less of a backdoor is left)."""
    from .core import fooling_rates
    delta = targeted_delta(model, batches, x[0], suspect, _probe_config(cfg), cfg.probe_steps, bound=cfg.probe_bound,
                           ranks=ranks)
    return fooling_rates(model, x, delta, False, num_classes, ranks=ranks)[suspect]
