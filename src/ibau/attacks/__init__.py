"""Backdoor attacks: triggers (one module per family), a registry, and dataset poisoning."""
from __future__ import annotations

from .badnets import BadNets
from .base import AdditiveTrigger, Trigger
from .blend import Blend
from .poison import PoisonedSet, poison

#: Attack name -> trigger class. The CLI and the benchmark grid enumerate this.
ATTACKS: dict[str, type[Trigger]] = {cls.name: cls for cls in (BadNets, Blend)}


def make_trigger(name: str, **kwargs) -> Trigger:
    """Build a registered trigger by name; ``make_trigger(**trigger.spec())`` rebuilds ``trigger``."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name](**kwargs)


__all__ = ["ATTACKS", "AdditiveTrigger", "BadNets", "Blend", "PoisonedSet", "Trigger", "make_trigger", "poison"]
