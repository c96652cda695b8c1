"""The simplified VGG of the I-BAU paper (Table 9; SPEC §5)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer.

    Keeps every dataset, trigger and δ in pixel space [0, 1]: normalisation belongs to the model.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"normalisation mean has {len(mean)} channels but std has {len(std)}; give one value per channel to both")
        if any(s <= 0 for s in std):
            raise ValueError("normalisation std must be > 0 in every channel")
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _block(cin: int, cout: int, dropout: float) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ELU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ELU(inplace=True),
        nn.MaxPool2d(2), nn.Dropout(dropout),
    ]


def small_vgg(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              width: int = 32) -> nn.Sequential:
    """The paper's simplified VGG: three [conv-BN-ELU]x2 + maxpool + dropout blocks (32, 64, 128
    channels; dropout .3/.4/.4), then one linear layer. ≈308k parameters at 32x32 with 10 classes.

    Args:
        num_classes: outputs of the last layer (default 10).
        in_channels: image channels (default 3).
        input_size: square input side; must be divisible by 8 (default 32 → flatten 2048).
        mean, std: optional per-channel normalisation applied as the first layer (default none).
        width: channels of the first block; the others have 2× and 4× (default 32, the paper's).

    >>> model = small_vgg(10)
    >>> model(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if input_size % 8 or input_size < 8:
        raise ValueError(f"input_size must be a multiple of 8 (three 2x2 max-pools), got {input_size}")
    layers: list[nn.Module] = []
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise ValueError("give both mean and std for normalisation, or neither")
        layers.append(Normalize(mean, std))
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    layers += _block(in_channels, width, 0.3) + _block(width, 2 * width, 0.4) + _block(2 * width, 4 * width, 0.4)
    side = input_size // 8
    layers += [nn.Flatten(), nn.Linear(4 * width * side * side, num_classes)]
    return nn.Sequential(*layers)


def tiny_vgg(num_classes: int = 10, in_channels: int = 3, input_size: int = 32,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> nn.Sequential:
    """:func:`small_vgg` at a quarter of the width (8, 16, 32 channels, ≈1/16 of the compute): the same
    layer structure for quick checks such as ``ibau bench --preset smoke``; not a model to report."""
    return small_vgg(num_classes, in_channels, input_size, mean, std, width=8)
