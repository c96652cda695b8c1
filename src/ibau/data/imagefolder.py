"""Any image dataset in ``torchvision.datasets.ImageFolder`` layout: ``ROOT/train/CLASS/*.png`` and
``ROOT/test/CLASS/*.png`` (one folder per class, the same class folders in both splits)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ImageSet
from .images import load_resized, seeded_subset


def load_imagefolder(root: str | Path, size: int = 32, train_limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Load ``(train, test)`` from ``root/train`` and ``root/test``, images resized bilinearly to ``size``×``size``.

    Class indices follow the sorted class-folder names. ``train_limit`` keeps a seeded random subset of N
    training images (files are listed class by class).
    """
    from torchvision.datasets import ImageFolder

    root = Path(root)
    splits = {}
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise ValueError(f"image folder {folder} does not exist; give a root holding train/ and test/, each with one folder per class")
        try:
            splits[split] = ImageFolder(str(folder))
        except (FileNotFoundError, RuntimeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"cannot read {folder} as class folders ({reason}); put images in {folder}/CLASS_NAME/") from None
    train_ds, test_ds = splits["train"], splits["test"]
    if train_ds.classes != test_ds.classes:
        only_train = sorted(set(train_ds.classes) - set(test_ds.classes))
        only_test = sorted(set(test_ds.classes) - set(train_ds.classes))
        raise ValueError(f"train and test class folders differ (only in train: {only_train or 'none'}; "
                         f"only in test: {only_test or 'none'}); give both splits the same class folders")
    train_samples = [train_ds.samples[i] for i in seeded_subset(len(train_ds.samples), train_limit)]
    test_samples = test_ds.samples
    train = ImageSet.from_uint8_hwc(load_resized([p for p, _ in train_samples], size, desc="train images"),
                                    np.array([y for _, y in train_samples], dtype=np.int64))
    test = ImageSet.from_uint8_hwc(load_resized([p for p, _ in test_samples], size, desc="test images"),
                                   np.array([y for _, y in test_samples], dtype=np.int64))
    return train, test
