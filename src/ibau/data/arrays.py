"""In-memory image sets and the input checks every entry point shares."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputTypeError


@dataclass
class ImageSet:
    """Images N×C×H×W float32 in [0, 1] and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        check_images(self.images)
        check_labels(self.labels, n=len(self.images))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> ImageSet:
        return ImageSet(self.images[idx], self.labels[idx])

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    @classmethod
    def from_uint8_hwc(cls, x: np.ndarray, y: np.ndarray) -> ImageSet:
        """From uint8 N×H×W×C arrays (the common on-disk layout)."""
        if x.ndim != 4:
            raise ValueError(f"expected images shaped N×H×W×C, got {x.shape}")
        images = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)
        return cls(images.contiguous(), torch.as_tensor(np.asarray(y), dtype=torch.int64))


def check_images(x: torch.Tensor, name: str = "images") -> None:
    """One-line errors for the usual ways image tensors go wrong."""
    if not isinstance(x, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be shaped N×C×H×W, got shape {tuple(x.shape)}; add a batch or channel dimension")
    if len(x) == 0:
        raise ValueError(f"{name} is empty; give at least one image")
    if not x.is_floating_point():
        raise InputTypeError(f"{name} must be floating point in [0, 1], got {x.dtype}; divide uint8 images by 255")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contain {bad} NaN or infinite pixel values; clean or drop those images")


def check_labels(y: torch.Tensor, n: int | None = None, num_classes: int | None = None, name: str = "labels") -> None:
    if not isinstance(y, torch.Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if y.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class indices, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise InputTypeError(f"{name} must be integer class indices, got {y.dtype}")
    if n is not None and len(y) != n:
        raise ValueError(f"{n} images but {len(y)} {name}; give one label per image")
    if len(y) and int(y.min()) < 0:
        raise ValueError(f"{name} contain {int(y.min())}; class indices start at 0")
    if num_classes is not None and len(y) and int(y.max()) >= num_classes:
        raise ValueError(f"{name} contain class {int(y.max())} but the model has {num_classes} classes (0..{num_classes - 1}); "
                         "remap the labels or use a model with more outputs")
