"""Datasets as pixel-space tensors (N×C×H×W floats in [0, 1], int64 labels), and the paper's splits."""
from __future__ import annotations

from .arrays import ImageSet, check_images, check_labels
from .digits import load_digits
from .npz import load_npz
from .registry import DATASETS, DatasetSpec, load_dataset
from .splits import defender_split

__all__ = ["DATASETS", "DatasetSpec", "ImageSet", "check_images", "check_labels", "defender_split", "load_dataset",
           "load_digits", "load_npz"]
