"""Models: registry of architectures and safe model files."""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .cifar_resnet import resnet20
from .resnets import bb_preact_resnet18, densenet121, googlenet, preact_resnet18, resnet18
from .vgg import Normalize, small_vgg, tiny_vgg

#: Architecture name -> builder taking keyword arguments (num_classes, in_channels, input_size, mean, std).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_vgg": small_vgg,
    "tiny_vgg": tiny_vgg,
    "resnet20": resnet20,
    "preact_resnet18": preact_resnet18,
    "resnet18": resnet18,
    "googlenet": googlenet,
    "densenet121": densenet121,
    "bb:preactresnet18": bb_preact_resnet18,
}

#: What ``--arch`` accepts besides the names of :data:`MODELS` (``ibau.models.external``).
ARCH_FORMS = ("torchvision:NAME", "timm:NAME", "bb:NAME", "module.path:factory")


def build_model(arch: str, **kwargs) -> nn.Module:
    """Build an architecture from its ``arch`` string, the one a model card records: a name of
    :data:`MODELS`; ``"dp:ARCH"``, ARCH with BatchNorm swapped for GroupNorm, the form DP-SGD trains
    (``ibau.defenses.dp``); ``torchvision:NAME``, ``timm:NAME``, ``bb:NAME`` (BackdoorBench's model of that
    ``model_name``) or ``module.path:factory`` (the user's own code), see :mod:`ibau.models.external`.
    Keyword arguments: ``num_classes``, ``in_channels``, ``input_size``, ``mean``, ``std``."""
    if arch.startswith("dp:"):
        from ..defenses.dp import dp_architecture

        return dp_architecture(build_model(arch[3:], **kwargs)).eval()
    if arch in MODELS:
        return MODELS[arch](**kwargs)
    if ":" in arch:
        from .external import build_family

        return build_family(arch, **kwargs)
    raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(MODELS))}, "
                     f"or {', '.join(ARCH_FORMS)}")


from .io import ModelCard, load_model, save_model  # noqa: E402

__all__ = ["ARCH_FORMS", "MODELS", "ModelCard", "Normalize", "build_model", "load_model", "save_model", "small_vgg"]
