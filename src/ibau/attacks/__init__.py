"""Backdoor attacks: triggers (one module per family), a registry, and dataset poisoning."""
from __future__ import annotations

import inspect

import torch

from .badnets import BadNets
from .base import AdditiveTrigger, PerturbationTrigger, Trigger
from .blend import Blend
from .hidden import HiddenTrigger
from .inputaware import InputAware
from .invisible import L0Invisible, L2Invisible
from .multi import PAPER_SEVEN, MultiTrigger
from .poison import PoisonedSet, poison
from .semantic import SemanticReplacement
from .smooth import Smooth
from .trojan import TrojanSquare, TrojanWatermark
from .wanet import WaNet

#: Attack name -> single-trigger class. The CLI and the benchmark grid enumerate this.
ATTACKS: dict[str, type[Trigger]] = {cls.name: cls for cls in (
    BadNets, Blend, L0Invisible, L2Invisible, Smooth, TrojanSquare, TrojanWatermark, SemanticReplacement, WaNet,
    InputAware, HiddenTrigger)}


def make_trigger(name: str, **kwargs) -> Trigger:
    """Build a trigger from its spec; ``make_trigger(**trigger.spec())`` rebuilds ``trigger``."""
    if name == MultiTrigger.name:
        return MultiTrigger(**kwargs)
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of: {', '.join(sorted(ATTACKS))}")
    return ATTACKS[name](**kwargs)


def parse_attack(text: str, target: int | None = None, all_to_all: bool = False,
                 options: dict | None = None) -> list[tuple[str, dict]]:
    """Read the CLI's ``--attack``: one name (``badnets``), ``name:target`` pairs separated by commas
    (a multi-trigger attack), or ``multi7`` (the paper's 7-trigger-7-target set). ``options`` are extra
    keyword arguments of a single trigger's constructor or ``generate`` (e.g. ``{"alpha": 0.1}``).
    Returns ``[(name, kwargs)]``."""
    text = text.strip()
    if options and ("," in text or ":" in text or text == "multi7"):
        raise ValueError("--trigger-option applies to one trigger; build a multi-trigger attack in Python to tune its parts")
    if text == "multi7":
        pairs = list(PAPER_SEVEN.items())
    elif "," in text or ":" in text:
        pairs = []
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, sep, tgt = item.partition(":")
            if not sep or not tgt.strip().lstrip("-").isdigit():
                raise ValueError(f"multi-trigger entries are name:target (e.g. badnets:0,blend:3); got {item!r}")
            pairs.append((name.strip(), int(tgt)))
    else:
        kwargs = {"all_to_all": True} if all_to_all else ({} if target is None else {"target": target})
        _known(text)
        return [(text, {**(options or {}), **kwargs})]
    if target is not None or all_to_all:
        raise ValueError("--target/--all-to-all apply to one trigger; a multi-trigger attack names each target")
    for name, _ in pairs:
        _known(name)
    return [(name, {"target": tgt}) for name, tgt in pairs]


def build_attack(entries: list[tuple[str, dict]], model=None, images: torch.Tensor | None = None,
                 seed: int = 0, steps: int | None = None, test_set=None) -> Trigger:
    """Generate the triggers of :func:`parse_attack`'s entries (optimised ones against ``model``, with
    ``steps`` optimisation steps when given). ``test_set`` (the dataset's test split, an ``ImageSet`` or
    ``(images, labels)``) goes to the triggers whose ``generate`` takes it: ``blend`` with
    ``pattern="test_image"`` picks its image there."""
    def opt(name: str) -> dict:
        return {"steps": steps} if steps is not None and ATTACKS[name].needs_reference else {}

    parts = []
    for i, (name, kw) in enumerate(entries):
        cls = ATTACKS[name]
        known = (_accepted(cls.__init__) | _accepted(cls.generate)) - {"test_set"}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise ValueError(f"{name} has no option {', '.join(unknown)}; its options are: "
                             f"{', '.join(sorted(known - {'self', 'cls', 'model', 'images', 'kwargs'}))}")
        data = {"test_set": test_set} if "test_set" in _accepted(cls.generate) else {}
        kw = {"seed": seed + i, **opt(name), **kw}  # an explicit option (a trigger's own seed too) wins
        parts.append(cls.generate(model, images, **data, **kw))
    return parts[0] if len(parts) == 1 else MultiTrigger(parts)


def parse_options(items: list[str]) -> dict:
    """``["alpha=0.1", "image=cat.png"]`` -> ``{"alpha": 0.1, "image": "cat.png"}`` (numbers, true/false,
    none are converted; anything else stays a string)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"trigger options are KEY=VALUE (e.g. alpha=0.1); got {item!r}")
        low = raw.strip().lower()
        value: object = {"true": True, "false": False, "none": None}.get(low, raw.strip())
        if isinstance(value, str):
            for conv in (int, float):
                try:
                    value = conv(value)
                    break
                except ValueError:
                    pass
        out[key.strip()] = value
    return out


def _accepted(fn) -> set[str]:
    return set(inspect.signature(fn).parameters)


def _known(name: str) -> None:
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of: {', '.join(sorted(ATTACKS))}, or multi7")


__all__ = ["ATTACKS", "AdditiveTrigger", "BadNets", "Blend", "HiddenTrigger", "InputAware", "L0Invisible", "L2Invisible", "MultiTrigger",
           "PAPER_SEVEN", "PerturbationTrigger", "PoisonedSet", "SemanticReplacement", "Smooth", "Trigger",
           "TrojanSquare", "TrojanWatermark", "WaNet", "build_attack", "make_trigger", "parse_attack", "parse_options", "poison"]
