"""Saving and reusing triggers: ``trigger.json`` (the spec, which rebuilds it exactly) + PNG pictures."""
from __future__ import annotations

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
