"""Models: registry of architectures and safe model files."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .resnets import densenet121, googlenet, preact_resnet18, resnet18
from .vgg import Normalize, small_vgg, tiny_vgg

#: Architecture name -> builder taking keyword arguments (num_classes, in_channels, input_size, mean, std).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_vgg": small_vgg,
    "tiny_vgg": tiny_vgg,
    "preact_resnet18": preact_resnet18,
    "resnet18": resnet18,
    "googlenet": googlenet,
    "densenet121": densenet121,
}


def build_model(arch: str, **kwargs) -> nn.Module:
    """Build a registered architecture by name; ``"dp:NAME"`` is NAME with BatchNorm swapped for
    GroupNorm, the form DP-SGD trains (``ibau.defenses.dp``)."""
    if arch.startswith("dp:"):
        from ..defenses.dp import dp_architecture

        return dp_architecture(build_model(arch[3:], **kwargs)).eval()
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[arch](**kwargs)


from .io import ModelCard, load_model, save_model  # noqa: E402

__all__ = ["MODELS", "ModelCard", "Normalize", "build_model", "load_model", "save_model", "small_vgg"]
