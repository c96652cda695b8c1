"""Architectures ibau does not ship, named by an ``--arch`` string that a model card can record.

- ``torchvision:NAME``: ``torchvision.models.get_model(NAME, weights=None, num_classes=C)``, unchanged
  (ImageNet stems included; ibau's own ``resnet18`` etc. have a 32×32 stem instead).
- ``timm:NAME``: ``timm.create_model(NAME, pretrained=False, num_classes=C, in_chans=C_in)``, where timm is
  installed (``pip install 'ibau[timm]'``). Hub references (names with ``/`` or ``:``) are refused: a card
  never makes ibau reach the network.
- ``bb:NAME``: the model BackdoorBench builds for its ``model_name`` NAME: ``bb:preactresnet18`` is their
  PreActResNet18 (:func:`ibau.models.resnets.bb_preact_resnet18`), every torchvision name they use
  (``bb:vgg19_bn``, ``bb:resnet18``, ...) is torchvision's model as in ``torchvision:NAME``.
- ``module.path:factory``: a callable in the user's own Python code, imported as ordinary Python (from
  ``sys.path``, then the current folder) and called as ``factory(num_classes=C)``, plus
  ``in_channels=C_in`` and ``input_size=S`` when its signature accepts them (or ``**kwargs``). This is the
  only way ibau runs code it does not ship; a model card that names such an architecture is honoured only
  when the caller names the same string (``--arch``), so a downloaded card cannot make ibau import anything.

Input normalisation is never passed to a builder: when a card has ``mean``/``std``, ibau's
:class:`~ibau.models.vgg.Normalize` layer goes in front (``nn.Sequential(Normalize, net)``), so
datasets, triggers and δ stay in pixel space. :data:`NORMALIZATIONS` are the named ones of
``--normalize``.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from torch import nn

from .resnets import _with_norm, bb_preact_resnet18

logger = logging.getLogger(__name__)

#: ``--normalize NAME`` -> per-channel mean and std of the pixel values in [0, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # CIFAR-10 as BackdoorBench and WaNet normalise it
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)),
    # GTSRB training-set statistics as several backdoor code bases use them (BackdoorBench's GTSRB models
    # use none: mean 0, std 1)
    "gtsrb": ((0.3337, 0.3064, 0.3171), (0.2672, 0.2564, 0.2629)),
    # torchvision's ImageNet models
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

#: Arch prefixes that name a family of architectures by a name, never code.
FAMILIES = ("torchvision", "timm", "bb")

#: BackdoorBench ``model_name``s built by their own code, not torchvision, that ibau cannot rebuild.
_BB_OWN = ("resnext29", "senet18")


def parse_normalize(text: str, channels: int = 3) -> dict[str, list[float]]:
    """``--normalize``: a name of :data:`NORMALIZATIONS`, ``MEAN,STD`` (one value each, every channel) or
    ``M1,M2,M3/S1,S2,S3`` (per channel). Returns the card's ``{"mean": [...], "std": [...]}``.

    >>> parse_normalize("0.5,0.25")
    {'mean': [0.5, 0.5, 0.5], 'std': [0.25, 0.25, 0.25]}
    >>> parse_normalize("cifar10")["std"]
    [0.247, 0.243, 0.261]
    """
    text = text.strip()
    hint = (f"--normalize takes {', '.join(NORMALIZATIONS)}, MEAN,STD (e.g. 0.5,0.25) or per channel "
            "M1,M2,M3/S1,S2,S3")
    if text.lower() in NORMALIZATIONS:
        named = NORMALIZATIONS[text.lower()]
        return {"mean": list(named[0]), "std": list(named[1])}
    mean: list[float]
    std: list[float]
    try:
        if "/" in text:
            left, _, right = text.partition("/")
            mean, std = [float(v) for v in left.split(",")], [float(v) for v in right.split(",")]
        else:
            values = [float(v) for v in text.split(",")]
            if len(values) != 2:
                raise ValueError
            mean, std = [values[0]] * channels, [values[1]] * channels
    except ValueError:
        raise ValueError(f"cannot read --normalize {text!r}; {hint}") from None
    if len(mean) != len(std):
        raise ValueError(f"--normalize {text!r} has {len(mean)} means but {len(std)} stds; {hint}")
    if any(s <= 0 for s in std):
        raise ValueError(f"--normalize {text!r}: every std must be > 0")
    return {"mean": mean, "std": std}


def is_code_arch(arch: str) -> bool:
    """Whether ``arch`` names Python code to import (``module.path:factory``), not a registered name."""
    from . import MODELS

    arch = arch.removeprefix("dp:")
    prefix, sep, _ = arch.partition(":")
    return bool(sep) and arch not in MODELS and prefix not in FAMILIES


def build_family(arch: str, num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """Build ``torchvision:NAME``, ``timm:NAME``, ``bb:NAME`` or ``module.path:factory`` (see the module
    docstring), with ibau's normalisation layer in front when ``mean``/``std`` are given."""
    prefix, _, name = arch.partition(":")
    if not name:
        raise ValueError(f"--arch {arch!r} names no architecture after the colon; e.g. torchvision:resnet18 or mymodels:build")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if prefix == "torchvision":
        net = torchvision_model(name, num_classes, in_channels)
    elif prefix == "timm":
        net = timm_model(name, num_classes, in_channels)
    elif prefix == "bb":
        if name == "preactresnet18":
            return bb_preact_resnet18(num_classes, in_channels, input_size, mean, std)
        if name.startswith("vit") or name in _BB_OWN:
            raise ValueError(f"BackdoorBench's {name} is built by their own code (ViTs: resized to 224 inside a wrapper); "
                             "ibau cannot rebuild it: give your copy of the class as --arch module.path:factory")
        net = torchvision_model(name, num_classes, in_channels)
    else:
        net = factory_model(arch, num_classes, in_channels, input_size)
    return _with_norm(net, mean, std)


def torchvision_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ``name`` with random weights and ``num_classes`` outputs, as torchvision defines it."""
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise ValueError(f"torchvision has no classification model {name!r}"
                         + (f" (did you mean {', '.join(close)}?)" if close else "")
                         + "; see torchvision.models.list_models()")
    if in_channels != 3:
        raise ValueError(f"torchvision:{name} takes 3-channel images, the dataset has {in_channels}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def timm_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """timm's ``name`` with random weights (timm must be installed; hub names are refused)."""
    if "/" in name or ":" in name:
        raise ValueError(f"timm:{name} names a model hub entry; give a plain timm architecture name (ibau never downloads)")
    try:
        import timm
    except ImportError:
        raise ValueError(f"--arch timm:{name} needs the timm package, which is not installed; "
                         "pip install 'ibau[timm]' (or pip install timm)") from None
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ValueError(f"timm has no model {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
                         + "; see timm.list_models()")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


def import_factory(arch: str) -> Callable[..., nn.Module]:
    """The callable named by ``module.path:factory`` (attributes may be dotted: ``mod:Class.build``),
    imported from ``sys.path`` and then the current folder."""
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--arch {arch!r}: write your own architecture as module.path:factory (e.g. mymodels:build)")
    added = str(Path.cwd())
    appended = added not in sys.path
    if appended:
        sys.path.append(added)  # last, so it never shadows an installed module
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for --arch {arch} ({exc}); run ibau from the folder that "
                         f"holds {module_name.split('.')[0]}.py, or add that folder to PYTHONPATH") from None
    finally:
        if appended and added in sys.path:
            sys.path.remove(added)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name} has no {attr!r} for --arch {arch}; name a function or class defined in it")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"--arch {arch}: {attr} is not callable; name a function or nn.Module class")
    return obj


def factory_model(arch: str, num_classes: int, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """Call the user's ``module.path:factory`` with ``num_classes`` (and ``in_channels``/``input_size``
    when it accepts them); the result must be an ``nn.Module``."""
    factory = import_factory(arch)
    kwargs = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins and C extensions have no signature
        params = {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        if "num_classes" not in params:
            raise ValueError(f"--arch {arch}: the factory must take num_classes=; ibau calls it as "
                             f"{arch.partition(':')[2]}(num_classes=C[, in_channels=..., input_size=...])")
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    logger.info("building %s(%s) from your own code (--arch %s)", arch.partition(":")[2],
                ", ".join(f"{k}={v}" for k, v in kwargs.items()), arch)
    net = factory(**kwargs)
    if not isinstance(net, nn.Module):
        raise ValueError(f"--arch {arch} returned {type(net).__name__}, not a torch.nn.Module")
    return net
