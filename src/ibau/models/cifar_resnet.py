"""ResNet-20, the residual network of He et al. for CIFAR-10.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016,
https://arxiv.org/abs/1512.03385, §4.2: a 3×3 convolution with 16 filters, then three stages of n basic
blocks (two 3×3 convolutions each, BatchNorm after every convolution, ReLU) on feature maps of 32, 16 and
8 pixels with 16, 32 and 64 filters, the first convolution of stages 2 and 3 of stride 2, then global
average pooling and a linear layer: 6n + 2 layers, n = 3 for ResNet-20 (0.27 M parameters, the paper's
table 6).

Shortcuts are the paper's CIFAR choice, option A (§4.2: "we use identity shortcuts in all cases"): where a
stage halves the map and doubles the channels, the shortcut takes every second pixel and pads the new
channels with zeros, so every shortcut is parameter-free and the count is the paper's, 269,722 weights for
10 classes. Option B (1×1 projections) would add 2,560 convolution weights and two BatchNorms; the paper
uses it only for its ImageNet nets.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .resnets import _check, _with_norm


class ZeroPadShortcut(nn.Module):
    """Option A: ``x[:, :, ::stride, ::stride]`` with ``cout - cin`` zero channels appended (no parameters)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"zero channels={self.extra}, stride={self.stride}"


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, plus the shortcut, then ReLU (the paper's Fig. 2, left)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = (ZeroPadShortcut(cin, cout, stride) if stride != 1 or cin != cout
                                    else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of 6n + 2 layers (``blocks`` = n per stage; 3 for ResNet-20)."""

    def __init__(self, blocks: int = 3, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            stages.append(nn.Sequential(*(BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                          for i in range(blocks))))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # He initialisation (the paper's [13]), as torchvision's ResNets
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet20(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016, §4.2; option-A zero-padding shortcuts): 269,722 parameters with
    10 classes, optional normalisation layer first. Global average pooling takes any input of at least
    8 pixels (the digits' 16×16 too).

    >>> sum(p.numel() for p in resnet20(10).parameters())
    269722
    >>> resnet20(10)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    _check(num_classes, input_size)
    return _with_norm(CifarResNet(3, num_classes, in_channels), mean, std)
