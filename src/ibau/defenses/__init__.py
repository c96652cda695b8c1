"""Backdoor defenses behind one interface (:class:`Defense`), and a registry.

The registry maps a name to ``"module:Class"`` and imports on first use, so a defense whose optional
dependency is missing (Opacus for ``dp``) does not break the others.
"""
from __future__ import annotations

import importlib

from .base import Defense, DefenseResult
from .config import DefenseConfig, setting

#: Defense name -> "module:Class" inside ibau.defenses. The CLI and the benchmark enumerate this.
DEFENSES: dict[str, str] = {
    "ibau": "ibau:IBAU",
    "finetune": "finetune:FineTune",
    "fine_pruning": "fine_pruning:FinePruning",
    "neural_cleanse": "neural_cleanse:NeuralCleanse",
    "tabor": "tabor:TABOR",
    "deepinspect": "deepinspect:DeepInspect",
    "nad": "nad:NAD",
    "dp": "dp:DPSGD",
    "uap_at": "uap_at:UAPAdversarialTraining",
    "anp": "anp:ANP",
    "sau": "sau:SAU",
    "ft_sam": "ft_sam:FTSAM",
}


def defense_class(name: str) -> type[Defense]:
    if name not in DEFENSES:
        raise ValueError(f"unknown defense {name!r}; choose one of: {', '.join(DEFENSES)}")
    module, cls = DEFENSES[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def make_defense(name: str, config=None, **overrides) -> Defense:
    """Build a registered defense by name, with its config (or keyword overrides of the defaults)."""
    return defense_class(name)(config, **overrides)


__all__ = ["DEFENSES", "Defense", "DefenseConfig", "DefenseResult", "defense_class", "make_defense", "setting"]
