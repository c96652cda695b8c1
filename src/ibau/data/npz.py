"""Arrays in one ``.npz`` file: ``x_train``/``y_train``/``x_test``/``y_test``, images uint8 N×H×W×C."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ImageSet

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path: str | Path, train_limit: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Load ``(train, test)`` from an npz file laid out like ``shared/data/cifar10.npz``.

    ``train_limit`` keeps the first N training rows (for CPU-budget recipes).
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"dataset file {path} does not exist")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in _KEYS if k not in f.files]
        if missing:
            raise ValueError(f"{path.name} lacks {', '.join(missing)}; an npz dataset needs {', '.join(_KEYS)}")
        x_train, y_train = f["x_train"], f["y_train"]
        if train_limit is not None:
            x_train, y_train = x_train[:train_limit], y_train[:train_limit]
        train = ImageSet.from_uint8_hwc(x_train, y_train)
        test = ImageSet.from_uint8_hwc(f["x_test"], f["y_test"])
    return train, test
