"""The trigger interface every attack implements.

A trigger stamps a batch of pixel-space images (N×C×H×W floats in [0, 1]) on whatever device they are
on, and knows where stamped images should be sent: one target class, or ``y -> (y + 1) mod C``
(all-to-all).
"""
from __future__ import annotations

import torch


class Trigger:
    """Base class: subclasses implement :meth:`apply` and, when additive, :meth:`pattern`/:meth:`mask`."""

    name = "trigger"

    def __init__(self, target: int | None = 0, all_to_all: bool = False):
        if not all_to_all and (target is None or target < 0):
            raise ValueError(f"target must be a class index >= 0 for a one-to-one attack, got {target}")
        self.target = None if all_to_all else int(target)
        self.all_to_all = all_to_all

    # --- what subclasses provide -------------------------------------------------------------
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Return stamped copies of ``x`` (N×C×H×W in [0, 1])."""
        raise NotImplementedError

    def pattern(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """The trigger's pixel values (C×H×W); meaningful where :meth:`mask` is 1."""
        raise NotImplementedError

    def mask(self, shape: tuple[int, int, int]) -> torch.Tensor:
        """Where the trigger is stamped (C×H×W, values in [0, 1])."""
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------
    def target_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Labels a successful attack produces for images whose true labels are ``y``."""
        if self.all_to_all:
            return (y + 1) % num_classes
        if self.target >= num_classes:
            raise ValueError(f"attack target {self.target} is outside the model's {num_classes} classes; pick a target below {num_classes}")
        return torch.full_like(y, self.target)

    def victims(self, y: torch.Tensor) -> torch.Tensor:
        """Boolean mask of images that count for ASR: all of them, except the target class one-to-one."""
        if self.all_to_all:
            return torch.ones_like(y, dtype=torch.bool)
        return y != self.target

    def _params(self) -> dict:
        """Constructor arguments that rebuild this trigger (also shown by ``repr``)."""
        return {"target": self.target} if not self.all_to_all else {"all_to_all": True}

    def spec(self) -> dict:
        """A JSON-able description: ``make_trigger(**spec)`` rebuilds the same trigger."""
        return {"name": self.name, **self._params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"


class AdditiveTrigger(Trigger):
    """A trigger that blends a fixed pattern through a fixed mask: ``x' = (1 - m)·x + m·p``."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"triggers stamp batches shaped N×C×H×W; got shape {tuple(x.shape)}")
        shape = tuple(x.shape[1:])
        m = self.mask(shape).to(x.device, x.dtype)
        p = self.pattern(shape).to(x.device, x.dtype)
        return ((1 - m) * x + m * p).clamp(0, 1)
