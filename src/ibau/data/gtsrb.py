"""GTSRB (German Traffic Sign Recognition Benchmark, 43 classes) from ``gtsrb.npz`` or through
``torchvision.datasets.GTSRB``.

``DATA_DIR`` may be an ``.npz`` file, or a folder holding ``gtsrb.npz``, laid out like
``shared/data/gtsrb.npz`` (``x_train``/``y_train``/``x_test``/``y_test``, uint8 32×32 RGB, labels 0..42; its
training rows are shuffled, so the first N hold every class). Otherwise, the torchvision layout under
``DATA_DIR``: ``gtsrb/GTSRB/Training/000NN/*.ppm`` (one folder per class id) for train, and
``gtsrb/GTSRB/Final_Test/Images/*.ppm`` with ``gtsrb/GT-final_test.csv`` (``;``-separated, columns
``Filename`` and ``ClassId``) for test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ImageSet
from .images import load_resized, seeded_subset
from .npz import load_npz

NUM_CLASSES = 43
#: The file :func:`load_gtsrb` looks for in ``DATA_DIR`` before the torchvision layout.
NPZ_NAME = "gtsrb.npz"


def npz_file(data_dir: str | Path) -> Path | None:
    """``data_dir`` itself when it names an ``.npz`` file, ``data_dir/gtsrb.npz`` when that exists, else None."""
    path = Path(data_dir)
    if path.suffix == ".npz":
        return path
    return path / NPZ_NAME if (path / NPZ_NAME).is_file() else None


def _from_npz(path: Path, size: int, train_limit: int | None) -> tuple[ImageSet, ImageSet]:
    train, test = load_npz(path, train_limit=train_limit, num_classes=NUM_CLASSES)
    if train.shape[1:] != (size, size):
        raise ValueError(f"{path.name} holds {train.shape[1]}×{train.shape[2]} images, not {size}×{size}; "
                         f"use size={train.shape[1]} or the torchvision GTSRB folder")
    return train, test


def _train_label(path: str, label: int) -> int:
    """The class id from the ``000NN`` folder name (torchvision numbers the folders present, which differs
    from the class id when some folders are missing)."""
    name = Path(path).parent.name
    return int(name) if name.isdigit() else label


def load_gtsrb(data_dir: str | Path, download: bool = False, size: int = 32,
               train_limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Load ``(train, test)`` (39,209 / 12,630 signs of varying size, resized bilinearly to ``size``×``size``).

    From ``gtsrb.npz`` (see the module): ``train_limit`` keeps its first N training rows, ``download`` is
    unused. Through torchvision: ``download=True`` fetches the archives (needs internet); ``train_limit``
    keeps a seeded random subset of N training images (the files are listed class by class, so the first N
    would miss most classes).
    """
    npz = npz_file(data_dir)
    if npz is not None:
        return _from_npz(npz, size, train_limit)
    from torchvision.datasets import GTSRB

    try:
        train_ds = GTSRB(root=str(data_dir), split="train", download=download)
        test_ds = GTSRB(root=str(data_dir), split="test", download=download)
    except (RuntimeError, FileNotFoundError):
        raise ValueError(f"GTSRB not found under {data_dir}; pass --download (needs internet) "
                         "or point --data-dir at the folder holding gtsrb, or at gtsrb.npz") from None
    train_samples = [(p, _train_label(p, y)) for p, y in train_ds._samples]
    train_samples = [train_samples[i] for i in seeded_subset(len(train_samples), train_limit)]
    test_samples = list(test_ds._samples)
    for split, samples in (("train", train_samples), ("test", test_samples)):
        if not samples:
            raise ValueError(f"GTSRB {split} split under {data_dir} has no .ppm images; re-extract the archive or pass --download")
    train = ImageSet.from_uint8_hwc(load_resized([p for p, _ in train_samples], size, desc="GTSRB train"),
                                    np.array([y for _, y in train_samples], dtype=np.int64))
    test = ImageSet.from_uint8_hwc(load_resized([p for p, _ in test_samples], size, desc="GTSRB test"),
                                   np.array([y for _, y in test_samples], dtype=np.int64))
    return train, test
