"""The accuracy guard (``acc_guard``): roll back a round that costs clean accuracy.

A defender can measure clean accuracy, but not on the images it unlearns with (the θ steps fit those). So
the guard holds back a seeded slice of the clean set (``guard_fraction``) that no round ever sees, scores
the model on it before the first round and after every round, and when a round lowers that accuracy by more
than ``acc_guard`` it restores the weights (and the optimiser state) from before the round and multiplies the
θ step size of the remaining rounds by ``guard_backoff``. The round still counts, so the run ends on time.
With ``guard_mode="select"`` nothing is undone: the rounds run on, and only the latest round within
``acc_guard`` of the start may be returned (the rule is in :func:`ibau.unlearn.unlearn`), or the model as it was
handed over when none is. A round that costs accuracy can then be the price of the next ones' recovery.

Clean data only: nothing here looks at a trigger or at held-out images.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import IBAUConfig


def guard_split(n: int, cfg: IBAUConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(kept, held_back)`` indices of a clean set of ``n`` images: ``guard_fraction`` of them (at least one)
    held back for the guard, drawn with a generator of their own (``seed + 3``), the rest in their order."""
    held = cfg.guard_size(n)
    if n - held < 1:
        raise ValueError(f"acc_guard holds back {held} of the {n} clean images and leaves none to unlearn with; "
                         f"give more clean images or a smaller guard_fraction")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 3))
    return order[held:].sort().values, order[:held].sort().values


def scale_step(opts: Sequence[torch.optim.Optimizer], schedules: Sequence, factor: float) -> None:
    """Multiply the θ step size of every optimiser by ``factor`` from now on, schedules included (a cosine
    continues from the scaled step; a warm-up's factors apply to scaled base steps)."""
    for opt, schedule in zip(opts, schedules):
        for group in opt.param_groups:
            group["lr"] *= factor
        if schedule is not None:
            schedule.base_lrs = [lr * factor for lr in schedule.base_lrs]


def restore_optimizers(opts: Sequence[torch.optim.Optimizer], states: Sequence[dict]) -> None:
    """Put back the optimisers' moments from ``states`` but keep their current step sizes: the schedules have
    moved on with the rolled-back round, which still counts."""
    for opt, state in zip(opts, states):
        lrs = [group["lr"] for group in opt.param_groups]
        opt.load_state_dict(state)
        for group, lr in zip(opt.param_groups, lrs):
            group["lr"] = lr
