"""Datasets by name: ``load_dataset("cifar10", data_dir=...)`` returns ``(train, test)`` image sets."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .arrays import ImageSet
from .cifar10 import load_cifar10
from .digits import load_digits
from .gtsrb import load_gtsrb
from .imagefolder import load_imagefolder
from .npz import load_npz

DIGITS_TEST_SIZE = 500


@dataclass(frozen=True)
class DatasetSpec:
    """One named dataset; ``loader(data_dir, download, train_limit)`` returns ``(train, test)``."""

    name: str
    num_classes: int | None  # None: read from the data
    loader: Callable[..., tuple[ImageSet, ImageSet]]
    needs_path: bool
    description: str


def _digits(data_dir: str | Path | None, download: bool, train_limit: int | None) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's digits at 3×32×32, split by ``torch.randperm`` (seed 0) into 1,297 train / 500 test."""
    full = load_digits(size=32, channels=3)
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))
    train_idx, test_idx = perm[:-DIGITS_TEST_SIZE], perm[-DIGITS_TEST_SIZE:]
    if train_limit is not None:
        train_idx = train_idx[:train_limit]
    return full.subset(train_idx), full.subset(test_idx)


def _cifar10(data_dir, download, train_limit):
    return load_cifar10(data_dir, download=download, train_limit=train_limit)


def _gtsrb(data_dir, download, train_limit):
    return load_gtsrb(data_dir, download=download, train_limit=train_limit)


def _npz(data_dir, download, train_limit):
    return load_npz(data_dir, train_limit=train_limit)


def _imagefolder(data_dir, download, train_limit):
    return load_imagefolder(data_dir, train_limit=train_limit)


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("digits", 10, _digits, False,
                "scikit-learn's 8×8 digits upsampled to 3×32×32 (ships with scikit-learn); 1,297 train / 500 test"),
    DatasetSpec("cifar10", 10, _cifar10, True,
                "CIFAR-10 (torchvision): --data-dir holds cifar-10-batches-py; 50,000 train / 10,000 test"),
    DatasetSpec("gtsrb", 43, _gtsrb, True,
                "GTSRB traffic signs at 32×32: --data-dir is gtsrb.npz (or a folder holding it), or holds torchvision's "
                "gtsrb/; 39,209 train / 12,630 test"),
    DatasetSpec("npz", None, _npz, True,
                "one .npz file with x_train/y_train/x_test/y_test (uint8 N×H×W×C images; classes: its num_classes "
                "or class_names member, else the largest label + 1): --data-dir is the file"),
    DatasetSpec("imagefolder", None, _imagefolder, True,
                "--data-dir holds train/ and test/, each with one folder of images per class; resized to 32×32"),
)}


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False,
                 train_limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Load ``(train, test)`` for a registered dataset; ``data_dir`` is the folder (or, for ``npz`` and
    ``gtsrb``, the .npz file).

    ``download`` applies to cifar10 and gtsrb only; ``train_limit`` caps the training images.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if spec.needs_path and data_dir is None:
        raise ValueError(f"dataset {name!r} needs --data-dir")
    if train_limit is not None and (isinstance(train_limit, bool) or not isinstance(train_limit, int) or train_limit < 1):
        raise ValueError(f"train limit must be a positive whole number of images, got {train_limit!r}")
    return spec.loader(data_dir, download, train_limit)
