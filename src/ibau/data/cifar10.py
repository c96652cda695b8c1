"""CIFAR-10 through ``torchvision.datasets.CIFAR10``: ``DATA_DIR/cifar-10-batches-py/`` holding the pickled
``data_batch_1`` … ``data_batch_5``, ``test_batch`` and ``batches.meta`` of the python release."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ImageSet


def load_cifar10(data_dir: str | Path, download: bool = False, train_limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Load ``(train, test)`` (50,000 / 10,000 RGB 32×32 images, 10 classes) from ``data_dir``.

    Reads the datasets' ``.data`` (uint8 N×32×32×3) and ``.targets`` directly, without per-item transforms.
    ``download=True`` fetches the archive (needs internet). ``train_limit`` keeps the first N training images
    (CIFAR-10's batches are already shuffled).
    """
    from torchvision.datasets import CIFAR10

    try:
        train_ds = CIFAR10(root=str(data_dir), train=True, download=download)
        test_ds = CIFAR10(root=str(data_dir), train=False, download=download)
    except RuntimeError:
        raise ValueError(f"CIFAR-10 not found under {data_dir}; pass --download (needs internet) "
                         "or point --data-dir at the folder holding cifar-10-batches-py") from None
    x_train, y_train = train_ds.data, np.asarray(train_ds.targets, dtype=np.int64)
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    train = ImageSet.from_uint8_hwc(x_train, y_train)
    test = ImageSet.from_uint8_hwc(test_ds.data, np.asarray(test_ds.targets, dtype=np.int64))
    return train, test
