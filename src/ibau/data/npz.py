"""Arrays in one ``.npz`` file: ``x_train``/``y_train``/``x_test``/``y_test``, images uint8 N×H×W×C.

The class count is the file's ``num_classes`` member (a scalar), else the length of its ``class_names``
member, else the largest label + 1; other members (e.g. GTSRB's ``train_track``) are ignored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ImageSet

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def declared_classes(f, name: str) -> int | None:
    """The class count an npz file declares (``num_classes``, else ``len(class_names)``); None if neither."""
    if "num_classes" in f.files:
        value = f["num_classes"]
        if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer) or int(value) < 1:
            raise ValueError(f"{name}'s num_classes must be one positive whole number, got {value!r}; fix the file")
        return int(value)
    if "class_names" in f.files:
        return len(f["class_names"])
    return None


def check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    """One-line error when ``labels`` hold a class outside ``0 .. num_classes - 1``."""
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
        raise ValueError(f"{where} holds label {bad} but the dataset has {num_classes} classes (0..{num_classes - 1}); "
                         "fix the labels or the class count")


def load_npz(path: str | Path, train_limit: int | None = None,
             num_classes: int | None = None) -> tuple[ImageSet, ImageSet]:
    """Load ``(train, test)`` from an npz file laid out like ``shared/data/cifar10.npz`` or ``gtsrb.npz``.

    ``train_limit`` keeps the first N training rows (for CPU-budget recipes). ``num_classes``: the class
    count the caller expects (e.g. 43 for GTSRB); it must agree with the one the file declares, and every
    label must lie below it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dataset file {path} does not exist; point --data-dir at an .npz file")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in _KEYS if k not in f.files]
        if missing:
            raise ValueError(f"{path.name} lacks {', '.join(missing)}; an npz dataset needs {', '.join(_KEYS)}")
        declared = declared_classes(f, path.name)
        if num_classes is not None and declared is not None and declared != num_classes:
            raise ValueError(f"{path.name} declares {declared} classes but this dataset has {num_classes}; "
                             "check that --data-dir points at the right file")
        count = num_classes if num_classes is not None else declared
        x_train, y_train = f["x_train"], f["y_train"]
        if train_limit is not None:
            x_train, y_train = x_train[:train_limit], y_train[:train_limit]
        x_test, y_test = f["x_test"], f["y_test"]
    if count is not None:
        check_label_range(np.asarray(y_train), count, f"{path.name}'s y_train")
        check_label_range(np.asarray(y_test), count, f"{path.name}'s y_test")
    return ImageSet.from_uint8_hwc(x_train, y_train), ImageSet.from_uint8_hwc(x_test, y_test)
