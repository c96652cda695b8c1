"""Safe model files: safetensors weights plus a JSON card.

A model file handed to ibau is untrusted by definition, so loading never executes code: weights come
from safetensors, or from a plain PyTorch checkpoint read with ``torch.load(weights_only=True)``.
Anything that would need full unpickling is refused.
"""
from __future__ import annotations

import json
import logging
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

logger = logging.getLogger(__name__)
CARD_FORMAT = "ibau-model/1"
_NESTED_KEYS = ("net", "state_dict", "model", "model_state_dict")


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


def _numpy_globals() -> list:
    """numpy's array, scalar and dtype reconstructors: data containers that numpy's own code rebuilds
    from their bytes, which ``weights_only`` loading may allow (torch's documented way to read arrays);
    under names of numpy 2 and of numpy 1 (``numpy.core``)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    out: list = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    out += [(core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
            (core.multiarray.scalar, "numpy.core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def _global_name(g) -> str:
    obj, name = g if isinstance(g, tuple) else (g, None)
    return name or f"{obj.__module__}.{obj.__qualname__}"


def _unsafe_globals(path: Path) -> list[str] | None:
    """The globals a torch zip checkpoint names that ``weights_only`` does not allow, read by a static
    disassembly of its pickle (nothing is executed); None where torch cannot tell (older torch, legacy files)."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if lister is None:
        return None
    try:
        return sorted(lister(str(path)))
    except Exception:  # not a zip checkpoint, or one this torch cannot disassemble
        return None


def _pickle_mentions(path: Path, words: tuple[str, ...]) -> bool:
    """Whether the pickle inside a torch zip checkpoint holds every string of ``words`` (a byte search,
    nothing is unpickled): how a refused file is recognised for its message."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            member = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            data = z.read(member) if member else b""
    except (OSError, zipfile.BadZipFile):
        return False
    return all(w.encode() in data for w in words)


_BB_WORDS = ("model_name", "num_classes", "img_size", "bd_test")


def _refusal(path: Path, exc: Exception, unsafe: list[str] | None) -> str:
    text = str(exc)
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if text.strip() else type(exc).__name__
    code = [g for g in unsafe or [] if not g.startswith("numpy.")]
    needs = f"it needs {', '.join(code[:3])}" if code else detail[:160]
    if _pickle_mentions(path, _BB_WORDS):
        return (f"refusing to load {path.name}: it is a BackdoorBench attack_result.pt whose data sets hold objects only code "
                f"can rebuild ({needs}: images kept in memory); where you trust the file, keep its model alone (README, "
                "\"Bring your own model\") and pass --trigger for ASR")
    return (f"refusing to load {path.name}: it is not a plain weights file and unpickling it could run code "
            f"({needs}); re-save only its state_dict, or convert it to safetensors where you trust it")


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``, without torch's warning about a pickle protocol it did not write
    (a refusal stays one line)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError)


def read_object(path: str | Path) -> Any:
    """What a PyTorch checkpoint holds, read without ever running code from it: ``torch.load(weights_only=True)``
    (tensors, dicts, lists, numbers, strings), which a second try extends to numpy arrays when the file's
    pickle names numpy's array reconstructors and nothing else (a BackdoorBench ``attack_result.pt`` keeps its
    indices in them). Anything else is refused with a one-line ``ValueError``."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model file {path} does not exist")
    try:
        return _torch_load(path)
    except _LOAD_ERRORS as exc:
        error: Exception = exc
    unsafe = _unsafe_globals(path)
    allowed = _numpy_globals()
    if unsafe and set(unsafe) <= {_global_name(g) for g in allowed}:
        try:
            with torch.serialization.safe_globals(allowed):
                obj = _torch_load(path)
            logger.info("%s holds numpy arrays; read them with weights_only=True and numpy's array reconstructors allowed",
                        path.name)
            return obj
        except _LOAD_ERRORS as exc:
            error = exc
    raise ValueError(_refusal(path, error, unsafe)) from None


def _is_state(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def state_dict_of(obj: Any, name: str = "the file") -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint object: the object itself, or the one dict of tensors nested under
    ``net`` (the I-BAU authors'), ``state_dict``, ``model`` (BackdoorBench) or ``model_state_dict``. Several
    candidates are ambiguous and refused. ``module.`` prefixes (DataParallel) are dropped."""
    if not _is_state(obj):
        found = [k for k in _NESTED_KEYS if isinstance(obj, dict) and _is_state(obj.get(k))]
        if len(found) > 1:
            raise ValueError(f"{name} holds {len(found)} state dicts ({', '.join(repr(k) for k in found)}), so which model "
                             "to load is ambiguous; re-save the one you mean alone (torch.save(ckpt['net'], 'model.pt'))")
        if not found:
            raise ValueError(f"{name} holds no state dict (expected tensors, optionally under "
                             f"{', '.join(repr(k) for k in _NESTED_KEYS)})")
        obj = obj[found[0]]
    # Checkpoints saved from DataParallel prefix every key with 'module.'.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a plain PyTorch checkpoint without ever running code from it."""
    return state_dict_of(read_object(path), path.name)


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
    small VGG, or ibau's own names shifted by a normalisation layer); ``None`` when they do not, so the
    caller reports the mismatch. (A file with exactly the architecture's names is loaded by name, never by
    layout: if its shapes disagree by name it is refused, however its order reads.)"""
    if len(state) != len(expected):
        return None
    if any(tuple(a.shape) != tuple(b.shape) for a, b in zip(state.values(), expected.values())):
        return None
    first = next((f"{a} -> {b}" for a, b in zip(state, expected) if a != b), "")
    logger.info("%s: tensor names differ from the architecture's; loaded by layout (%d tensors in the same "
                "order and shapes, e.g. %s)", name, len(state), first)
    return dict(zip(expected, state.values()))


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape)).replace(",)", ")")


def _mismatch(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], arch: str) -> str:
    """Where ``state`` and ``expected`` first disagree, by position: names and shapes."""
    files, ours = list(state.items()), list(expected.items())
    for i, ((a, ta), (b, tb)) in enumerate(zip(files, ours)):
        if tuple(ta.shape) != tuple(tb.shape):
            return f"first shape mismatch at tensor {i + 1}: file {a} {_shape(ta)} vs {b} {_shape(tb)}"
    n = min(len(files), len(ours))
    if len(files) > n:
        return f"first extra tensor: file {files[n][0]} {_shape(files[n][1])}"
    if len(ours) > n:
        return f"first missing tensor: {ours[n][0]} {_shape(ours[n][1])}"
    return "tensor names differ"  # pragma: no cover - same count and shapes load by layout


def _normalize_keys(model: nn.Module) -> list[str]:
    from .vgg import Normalize

    return [f"{prefix}.{buf}" if prefix else buf for prefix, m in model.named_modules() if isinstance(m, Normalize)
            for buf in ("mean", "std")]


def fit_state(model: nn.Module, state: dict[str, torch.Tensor], card: ModelCard, name: str,
              fix: str | None = None) -> nn.Module:
    """Load ``state`` into ``model`` (built from ``card``): by name; a file without ibau's normalisation layer
    gets the card's (the network was saved without it, e.g. a BackdoorBench or torchvision model); names that
    differ load by layout when the tensors match one-to-one in order and shape (one log line says so).
    Anything else is a one-line ``ValueError`` naming the first mismatched tensors and ``fix``."""
    expected = model.state_dict()
    norm = [k for k in _normalize_keys(model) if k not in state]
    weights = {k: v for k, v in expected.items() if k not in norm}
    mapped: dict[str, torch.Tensor] | None = None
    if set(state) == set(weights):
        mapped = state
    elif norm and all(k.startswith("1.") for k in weights) and {k[2:] for k in weights} == set(state):
        mapped = {f"1.{k}": v for k, v in state.items()}  # Sequential(Normalize, net): the network's own names
    else:
        mapped = by_layout(state, weights, name)
    label = card.arch
    if mapped is None or any(tuple(mapped[k].shape) != tuple(v.shape) for k, v in weights.items()):
        where = _mismatch(state if mapped is None else {k: mapped[k] for k in weights}, weights, label)
        fix = fix or "pass the --arch/--num-classes it was made with (your own class: --arch module.path:factory)"
        raise ValueError(f"model file {name} does not match its card ({card.arch}, {card.num_classes} classes; "
                         f"{len(weights)} tensors, the file {len(state)}): {where}; {fix}")
    if norm:
        logger.info("%s: input normalisation from the card (mean %s, std %s) goes in front of the model", name,
                    (card.normalization or {}).get("mean"), (card.normalization or {}).get("std"))
    model.load_state_dict({**{k: expected[k] for k in norm}, **mapped})
    return model.eval()


def check_code_arch(card: ModelCard, trust_arch: str | None, name: str) -> None:
    """Refuse a card read from disk that names Python code to import (``module.path:factory``) unless the
    caller named the same architecture (``--arch``): a downloaded card must not make ibau import anything."""
    from .external import is_code_arch

    if is_code_arch(card.arch) and card.arch.removeprefix("dp:") != (trust_arch or "").removeprefix("dp:"):
        raise ValueError(f"{name}'s card names the architecture {card.arch!r}, Python code to import; if it is your own "
                         f"code, pass --arch {card.arch.removeprefix('dp:')} (Python: trust_arch=...) to run it")


def load_model(path: str | Path, card: ModelCard | None = None, *,
               trust_arch: str | None = None) -> tuple[nn.Module, ModelCard]:
    """Load weights and rebuild the model from its card (or the card given).

    Returns ``(model, card)``; the model is on CPU in eval mode. Raises ``ValueError`` with one line
    when the file is unsafe, unreadable, or does not match its card. A card read from disk that names
    the user's own code (``module.path:factory``) is built only when ``trust_arch`` is that same string.
    """
    from_disk = card is None
    card = card or read_card(path)
    if from_disk:
        check_code_arch(card, trust_arch, Path(path).name)
    state = load_state(path)
    model = card.build()
    fix = f"fix {card_path(path).name} or re-create the model" if from_disk else None
    return fit_state(model, state, card, Path(path).name, fix), card
