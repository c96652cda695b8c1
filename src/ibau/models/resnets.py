"""ResNet-family models for 32×32 inputs: PreActResNet18 (as used by WaNet and the I-BAU appendix) and
torchvision architectures (ResNet-18, GoogLeNet, DenseNet-121) with a CIFAR-style stem.

PreActResNet: He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016,
https://arxiv.org/abs/1603.05027. torchvision supplies the others; only their stems are changed so that a
32×32 image is not reduced to 1×1 before the first block (3×3 stride-1 first convolution, no max-pool).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .vgg import Normalize


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 for small images (4 stages of 2 blocks: 64, 128, 256, 512 channels).

    ``final_bn=True`` (ibau's, as in WaNet's code): BatchNorm and ReLU after the last stage, then global
    average pooling and the linear layer. ``final_bn=False``: pooling straight after the last stage, as in
    BackdoorBench's PreActResNet18, whose tensor names this model then has exactly (``conv1.weight``,
    ``layer1.0.bn1.weight``, ..., ``layer2.0.shortcut.0.weight``, ..., ``linear.bias``).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, final_bn: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(PreActBlock(cin, cout, stride), PreActBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512) if final_bn else None
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        if self.bn is not None:
            out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _small_stem(name: str, net: nn.Module, in_channels: int) -> nn.Module:
    """Replace a torchvision model's ImageNet stem by a 3×3 stride-1 convolution without max-pooling."""
    if name == "resnet18":
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif name == "densenet121":
        features = net.get_submodule("features")
        features.conv0 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        features.pool0 = nn.Identity()
    elif name == "googlenet":
        net.get_submodule("conv1").conv = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool1 = nn.Identity()
        net.maxpool2 = nn.Identity()
    return net


def _torchvision(name: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    kwargs = {"weights": None, "num_classes": num_classes}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True, transform_input=False)
    return _small_stem(name, getattr(torchvision.models, name)(**kwargs), in_channels)


def _with_norm(net: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None) -> nn.Module:
    if mean is None and std is None:
        return net
    if mean is None or std is None:
        raise ValueError("give both mean and std for normalisation, or neither")
    return nn.Sequential(Normalize(mean, std), net)


def _check(num_classes: int, input_size: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if input_size < 8:
        raise ValueError(f"input_size must be >= 8 pixels, got {input_size}")


def preact_resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """PreActResNet18 (≈11.2M parameters), optional normalisation layer first.

    >>> preact_resnet18(10)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    _check(num_classes, input_size)
    return _with_norm(PreActResNet18(num_classes, in_channels), mean, std)


def bb_preact_resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
                       mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """BackdoorBench's PreActResNet18 (``model_name`` ``preactresnet18``): :func:`preact_resnet18` without
    the BatchNorm+ReLU after the last stage, with BackdoorBench's tensor names, so its ``attack_result.pt``
    loads as it is. Its models expect normalised inputs: give ``mean``/``std`` (a BackdoorBench file's
    card carries them).

    >>> bb_preact_resnet18(10)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> sorted(bb_preact_resnet18(10).state_dict())[:2]
    ['conv1.weight', 'layer1.0.bn1.bias']
    """
    _check(num_classes, input_size)
    return _with_norm(PreActResNet18(num_classes, in_channels, final_bn=False), mean, std)


def _make_torchvision(name: str):
    def build(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
        _check(num_classes, input_size)
        return _with_norm(_torchvision(name, num_classes, in_channels), mean, std)

    build.__name__ = name
    build.__doc__ = f"torchvision's {name} with a 3×3 stride-1 stem for 32×32 inputs, no pretrained weights."
    return build


resnet18 = _make_torchvision("resnet18")
googlenet = _make_torchvision("googlenet")
densenet121 = _make_torchvision("densenet121")
