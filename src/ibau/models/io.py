"""Safe model files: safetensors weights plus a JSON card.

A model file handed to ibau is untrusted by definition, so loading never executes code: weights come
from safetensors, or from a plain PyTorch checkpoint read with ``torch.load(weights_only=True)``.
Anything that would need full unpickling is refused.
"""
from __future__ import annotations

import json
import logging
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)
CARD_FORMAT = "ibau-model/1"
_NESTED_KEYS = ("net", "state_dict", "model")


@dataclass
class ModelCard:
    """What is needed to rebuild a model, plus free-form metadata (attack, metrics, ...)."""

    arch: str
    num_classes: int
    input_shape: list[int]  # [C, H, W]
    normalization: dict[str, list[float]] | None = None  # {"mean": [...], "std": [...]}
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = CARD_FORMAT

    def build(self) -> nn.Module:
        from . import build_model

        norm = self.normalization or {}
        c, h, w = self.input_shape
        if h != w:
            raise ValueError(f"card input_shape {self.input_shape} is not square; only square inputs are supported")
        return build_model(self.arch, num_classes=self.num_classes, in_channels=c, input_size=h,
                           mean=norm.get("mean"), std=norm.get("std"))


def card_path(weights: str | Path) -> Path:
    """The card lives beside the weights: ``model.safetensors`` -> ``model.json``."""
    return Path(weights).with_suffix(".json")


def save_model(model: nn.Module, path: str | Path, card: ModelCard) -> Path:
    """Write ``path`` (safetensors) and its JSON card beside it; returns the weights path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"model path must end in .safetensors, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": CARD_FORMAT})
    card_path(path).write_text(json.dumps(asdict(card), indent=2, default=str) + "\n")
    return path


def read_card(path: str | Path) -> ModelCard:
    cpath = card_path(path)
    if not cpath.exists():
        raise ValueError(f"no model card {cpath.name} beside {Path(path).name}; write one, or pass --arch/--num-classes")
    try:
        raw = json.loads(cpath.read_text())
        return ModelCard(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"model card {cpath} is not a valid ibau card: {exc}") from None


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a plain PyTorch checkpoint without ever running code from it."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"refusing to load {path.name}: it is not a plain weights file and unpickling it could run code "
            f"({first[:160]}); re-save only its state_dict, or convert it to safetensors where you trust it"
        ) from None
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path.name} holds no state dict (expected tensors, optionally under 'net', 'state_dict' or 'model')")
    # Checkpoints saved from DataParallel prefix every key with 'module.'.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{path.name} is not a readable safetensors file: {exc}") from None
    return _read_checkpoint(path)


def by_layout(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
              name: str = "the file") -> dict[str, torch.Tensor] | None:
    """``state`` renamed to ``expected``'s keys when the two match one-to-one in order and shape (another
    code base's names for the same architecture, e.g. the I-BAU authors' ``features.0.weight`` for the
    small VGG); ``None`` when they do not, so the caller reports the mismatch."""
    if len(state) != len(expected):
        return None
    if any(tuple(a.shape) != tuple(b.shape) for a, b in zip(state.values(), expected.values())):
        return None
    first = next((f"{a} -> {b}" for a, b in zip(state, expected) if a != b), "")
    logger.info("%s: tensor names differ from the architecture's; loaded by layout (%d tensors in the same "
                "order and shapes, e.g. %s)", name, len(state), first)
    return dict(zip(expected, state.values()))


def load_model(path: str | Path, card: ModelCard | None = None) -> tuple[nn.Module, ModelCard]:
    """Load weights and rebuild the model from its card (or the card given).

    Returns ``(model, card)``; the model is on CPU in eval mode. Raises ``ValueError`` with one line
    when the file is unsafe, unreadable, or does not match its card.
    """
    card = card or read_card(path)
    model = card.build()
    state = load_state(path)
    expected = model.state_dict()
    if set(state) != set(expected):
        state = by_layout(state, expected, Path(path).name) or state
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch at {k}: file {tuple(state[k].shape)} vs card {tuple(expected[k].shape)}")
        raise ValueError(f"model file {Path(path).name} does not match its card ({card.arch}, "
                         f"{card.num_classes} classes): " + "; ".join(parts))
    model.load_state_dict(state)
    return model.eval(), card
