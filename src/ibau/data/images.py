"""Image files of any size read into one uint8 N×H×W×3 array (shared by the GTSRB and image-folder loaders)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm


def load_resized(paths: Sequence[str | Path], size: int, desc: str = "loading images") -> np.ndarray:
    """Open each file with PIL, convert to RGB, resize to ``size``×``size`` (bilinear); uint8 N×size×size×3.

    A tqdm progress bar shows while the files are read.
    """
    if size < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img")):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {path} ({e}); remove or replace the file") from None
    return out


def seeded_subset(n: int, limit: int | None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` rows: all rows in order, or a seeded random subset kept in file order.

    Folder-based datasets list their files class by class, so taking the first N rows would keep only the first
    few classes; a random subset keeps every class represented.
    """
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False))
