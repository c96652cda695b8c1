"""Saving and reusing triggers: ``trigger.json`` (the spec, which rebuilds it exactly) + PNG pictures."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from .base import Trigger


def trigger_picture(trigger: Trigger, shape: tuple[int, ...]) -> torch.Tensor:
    """The trigger stamped on a mid-grey image (C×H×W): shows patches and signed perturbations alike."""
    return trigger.apply(torch.full((1, *shape), 0.5))[0]


def _png(img: torch.Tensor, path: Path) -> Path:
    from PIL import Image

    arr = (img.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0]).save(path)
    return path


def save_trigger(trigger: Trigger, shape: tuple[int, ...], folder: str | Path) -> list[Path]:
    """Write ``trigger.json`` and ``trigger.png`` (plus ``trigger_<name>.png`` per component of a
    multi-trigger) into ``folder``; returns the written paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "trigger.json"
    spec_path.write_text(json.dumps(trigger.spec()) + "\n")
    paths = [spec_path, _png(trigger_picture(trigger, shape), folder / "trigger.png")]
    parts = trigger.components()
    if len(parts) > 1:
        for i, part in enumerate(parts):
            paths.append(_png(trigger_picture(part, shape), folder / f"trigger_{i}_{part.name}.png"))
    return paths


def load_trigger(path: str | Path) -> Trigger:
    """Rebuild a trigger from a ``trigger.json`` (or a folder holding one)."""
    from . import make_trigger

    path = Path(path)
    if path.is_dir():
        path = path / "trigger.json"
    if not path.exists():
        raise ValueError(f"no trigger file at {path}; give a trigger.json written by `ibau attack`")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{path} does not hold a trigger spec (a JSON object with a 'name')")
    return make_trigger(**spec)


def parse_trigger(text: str) -> Trigger:
    """The trigger named on the command line (``--trigger`` of ``ibau defend``/``evaluate``): a
    ``trigger.json`` (or a folder holding one), or a registered attack name with ``key=value`` options
    separated by commas, built by :func:`ibau.attacks.make_trigger`. Triggers optimised against a model
    (``needs_reference``) have no values to rebuild from a name; give their trigger.json.

    >>> parse_trigger("badnets,target=8")
    BadNets(size=4, margin=1, value=1.0, target=8)
    """
    from . import ATTACKS, make_trigger, parse_options

    text = text.strip()
    path = Path(text)
    if text.endswith(".json") or path.is_dir() or (path.exists() and "," not in text and text not in ATTACKS):
        return load_trigger(path)
    name, *items = [part.strip() for part in text.split(",")]
    if name not in ATTACKS:
        raise ValueError(f"--trigger {text!r}: unknown attack {name!r}; give one of {', '.join(sorted(ATTACKS))} with "
                         "key=value options (e.g. badnets,target=8) or a trigger.json")
    cls = ATTACKS[name]
    if cls.needs_reference or cls.poisoning == "fit":
        raise ValueError(f"--trigger {name}: its pattern was optimised against a model, or trained with it, so a name "
                         "cannot rebuild it; give the trigger.json its attack wrote")
    options = parse_options([i for i in items if i])
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"--trigger {name} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(known))}")
    return make_trigger(name, **options)
