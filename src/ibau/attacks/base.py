"""The trigger interface every attack implements.

A trigger stamps a batch of pixel-space images (N×C×H×W floats in [0, 1]) on whatever device they are
on, and knows where stamped images should be sent: one target class, or ``y -> (y + 1) mod C``
(all-to-all).
"""
from __future__ import annotations

import torch
from torch import nn


class PoisoningIs:
    """A read-only flag, on the class and its instances: whether ``poisoning`` is ``family``."""

    def __init__(self, family: str):
        self.family = family

    def __get__(self, obj: Trigger | None, cls: type[Trigger]) -> bool:
        return (cls if obj is None else obj).poisoning == self.family


class Trigger:
    """Base class: subclasses implement :meth:`apply` and, when additive, :meth:`pattern`/:meth:`mask`.

    Triggers whose pattern is optimised against a reference model set ``needs_reference`` and build
    through :meth:`generate`; every trigger supports ``generate`` so callers need not branch.
    """

    name = "trigger"
    needs_reference = False
    #: Whether the trigger is a pattern blended or added through a mask (:meth:`pattern`/:meth:`mask`
    #: exist); warps, replacements and generated per-image triggers are not.
    additive = False
    #: How a training set is poisoned with this trigger, which picks ``ibau attack``'s strategy
    #: (:mod:`ibau.pipeline.poisoning`): ``"stamp"`` (stamp and relabel a seeded fraction of the training
    #: set, plus a noise mode's images (:meth:`noise`); the default), ``"craft"`` (clean-label poisons made
    #: by :meth:`craft`, as the hidden-trigger attack does: ``poison`` ignores the ratio for them) or ``"fit"``
    #: (no poisoned set: the trigger's own networks train together with the model, as the input-aware
    #: attack does).
    poisoning = "stamp"
    #: ``poisoning == "craft"`` and ``poisoning == "fit"``, read-only, for callers of the older flags.
    clean_label = PoisoningIs("craft")
    trains_with_model = PoisoningIs("fit")
    #: Whether ``all_to_all=True`` is meaningful for this attack.
    supports_all_to_all = True
    #: Noise-mode images per poisoned image (:meth:`noise`); 0 for triggers without a noise mode.
    cross_ratio = 0.0

    def __init__(self, target: int | None = 0, all_to_all: bool = False):
        if not all_to_all and (target is None or target < 0):
            raise ValueError(f"target must be a class index >= 0 for a one-to-one attack, got {target}")
        self.target: int | None = None if all_to_all or target is None else int(target)
        self.all_to_all = all_to_all

    # --- what subclasses provide -------------------------------------------------------------
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Return stamped copies of ``x`` (N×C×H×W in [0, 1])."""
        raise NotImplementedError

    def pattern(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The trigger's pixel values (C×H×W); meaningful where :meth:`mask` is 1."""
        raise NotImplementedError

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Where the trigger is stamped (C×H×W, values in [0, 1])."""
        raise NotImplementedError

    @classmethod
    def generate(cls, model=None, images: torch.Tensor | None = None, seed: int = 0, **kwargs) -> Trigger:
        """Build the trigger; optimised triggers use ``model`` (a reference classifier) and ``images``
        (reference images, N×C×H×W); the others ignore them."""
        return cls(**kwargs)

    def victim_start(self, model: nn.Module, load_reference: bool = True) -> list[nn.Parameter] | None:
        """Prepare the victim ``model`` before it trains on the poisoned set and return the parameters it
        trains; None (the default): every weight, from scratch. An attack whose victim fine-tunes a
        reference model (HT) loads it here, unless ``load_reference`` is False (a checkpoint took over)."""
        return None

    def victim_rows(self, labels: torch.Tensor, poisoned: torch.Tensor, seed: int = 0) -> torch.Tensor | None:
        """Rows of the poisoned training set the victim trains on; None (the default): all of them. An
        attack whose victim fine-tunes on a small clean set plus the poisons (HT) picks them here, seeded."""
        return None

    def noise(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """Images that poisoning adds with their *true* labels (WaNet's noise mode); None: no such images.
        ``cross_ratio`` of them per poisoned image."""
        return None

    def craft(self, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices, poisons)`` of a clean-label attack (``poisoning = "craft"``): training images replaced
        by crafted ones that keep their true labels (HT). Stamp-and-relabel triggers do not craft."""
        raise NotImplementedError(f"{self.name} poisons by stamping and relabelling, not by crafting")

    def components(self) -> list[Trigger]:
        """The single triggers this one is made of (itself; a multi-trigger lists its parts)."""
        return [self]

    # --- shared ------------------------------------------------------------------------------
    def target_labels(self, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Labels a successful attack produces for images whose true labels are ``y``."""
        if self.all_to_all:
            return (y + 1) % num_classes
        assert self.target is not None  # one-to-one: checked in __init__
        if self.target >= num_classes:
            raise ValueError(f"attack target {self.target} is outside the model's {num_classes} classes; pick a target below {num_classes}")
        return torch.full_like(y, self.target)

    def victims(self, y: torch.Tensor) -> torch.Tensor:
        """Boolean mask of images that count for ASR: all of them, except the target class one-to-one."""
        if self.all_to_all:
            return torch.ones_like(y, dtype=torch.bool)
        return y.ne(int(self.target))  # type: ignore[arg-type]  # one-to-one: target is set

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

    additive = True

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"triggers stamp batches shaped N×C×H×W; got shape {tuple(x.shape)}")
        shape = tuple(x.shape[1:])
        m = self.mask(shape).to(x.device, x.dtype)
        p = self.pattern(shape).to(x.device, x.dtype)
        return ((1 - m) * x + m * p).clamp(0, 1)


class PerturbationTrigger(Trigger):
    """A trigger that adds a fixed signed perturbation: ``x' = clip(x + perturbation, 0, 1)``.

    Subclasses implement :meth:`perturbation`; :meth:`pattern` is the perturbation itself and
    :meth:`mask` its support (where it is non-zero).
    """

    additive = True

    def perturbation(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The signed additive perturbation (C×H×W)."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"triggers stamp batches shaped N×C×H×W; got shape {tuple(x.shape)}")
        return (x + self.perturbation(tuple(x.shape[1:])).to(x.device, x.dtype)).clamp(0, 1)

    def pattern(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self.perturbation(shape).clone()

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        d = self.perturbation(shape)
        return (d.abs().sum(0, keepdim=True) > 0).float().expand(*d.shape).clone()


class StoredPerturbation(PerturbationTrigger):
    """A perturbation trigger whose ``delta`` (C×H×W) was optimised once and is stored.

    ``delta`` is kept rounded to 1e-4 so that its JSON spec rebuilds it bit for bit.
    """

    needs_reference = True

    def __init__(self, delta=None, target: int | None = 0, all_to_all: bool = False):
        super().__init__(target=target, all_to_all=all_to_all)
        self.delta = quantise(delta, f"{self.name} delta")

    def perturbation(self, shape: tuple[int, ...]) -> torch.Tensor:
        check_shape(self, self.delta, shape)
        return self.delta

    def _params(self) -> dict:
        return {"delta": as_list(self.delta), **super()._params()}

    def __repr__(self) -> str:
        return short_repr(self, "delta", self.delta)


def check_shape(trigger: Trigger, stored: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(stored.shape):
        raise ValueError(f"this {trigger.name} trigger was generated for {tuple(stored.shape)} images, "
                         f"not {tuple(shape)}; generate one for this dataset")


def short_repr(trigger: Trigger, key: str, t: torch.Tensor) -> str:
    """``repr`` with a stored tensor summarised by its shape and norms instead of printed in full."""
    shown = ", ".join(f"{k}={v!r}" for k, v in trigger._params().items() if k != key)
    l0 = int((t.abs().sum(0) > 0).sum())
    return (f"{type(trigger).__name__}({key}=<{tuple(t.shape)}, {l0} px, l2={float(t.norm()):.3f}, "
            f"linf={float(t.abs().max()):.3f}>, {shown})")


def quantise(values, what: str) -> torch.Tensor:
    """A C×H×W float32 tensor rounded to 1e-4 (so it survives a JSON round trip exactly)."""
    if values is None:
        raise ValueError(f"{what} is missing: this trigger is generated against a reference model; use "
                         "Trigger.generate(model, images) or `ibau attack --reference-model`")
    t = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if t.dim() != 3:
        raise ValueError(f"{what} must be shaped C×H×W, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return torch.round(t * 1e4).div(1e4).float()


def as_list(t: torch.Tensor) -> list:
    """JSON-able nested list of a quantised tensor (4 decimals)."""
    return torch.round(t.double() * 1e4).div(1e4).tolist()
