"""Blend: mix a fixed image into the input, x' = (1 − α)·x + α·p.

Chen et al., "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning", 2017,
https://arxiv.org/abs/1712.05526. The I-BAU paper blends a cartoon image; no image can be downloaded
here, so the default pattern is generated (seeded uniform noise, as in Chen et al.'s random-pattern
variant). Any user image can be given instead, or (``pattern="test_image"``, BackdoorBench's Blended with a
natural image) an image of the dataset's own test split, of a class other than the target: chosen by
:meth:`Blend.generate` (an ``index``, or seeded) and stored, pixels and provenance, in the spec.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .base import AdditiveTrigger, as_list, quantise

#: Where a blend's image comes from: seeded noise, a user image (``image=``), the test split's image.
PATTERNS = ("noise", "image", "test_image")


class Blend(AdditiveTrigger):
    """Blended-pattern trigger.

    Args:
        alpha: blend weight α in (0, 1] (default 0.2).
        image: optional path to an image file (any size; resized to the input) or a C×H×W tensor in
            [0, 1]; default None: seeded uniform noise. With ``pattern="test_image"``: the test image's
            pixels (a tensor or nested list, stored rounded to 1e-4), as :meth:`generate` fills it in.
        seed: seed of the generated pattern (default 0); with ``pattern="test_image"``, the seed that chose
            the image (when no ``index`` was given).
        target: target class (default 1, the paper's CIFAR-10 target); all_to_all: y → (y + 1) mod C.
        pattern: ``"noise"``, ``"image"`` or ``"test_image"``; default: ``"image"`` if ``image`` is given,
            else ``"noise"``. ``"test_image"`` blends an image of the dataset's test split whose class is not
            the target: :meth:`generate` picks it (``index=``, or a seeded draw) from the ``test_set`` it is given.
        index, label: where a ``"test_image"`` came from: its row in the test split and its class (recorded
            by :meth:`generate`; the spec keeps them beside the pixels).

    >>> Blend(alpha=0.2).apply(torch.zeros(1, 3, 8, 8)).max().item() <= 0.2
    True
    >>> test_images, test_labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> trig = Blend.generate(test_set=(test_images, test_labels), pattern="test_image", index=2, target=0)
    >>> trig
    Blend(alpha=0.2, image=<test image 2, class 2, (3, 8, 8)>, seed=0, pattern='test_image', index=2, label=2, target=0)
    >>> torch.allclose(trig.pattern((3, 8, 8)), test_images[2], atol=1e-4)
    True
    """

    name = "blend"

    def __init__(self, alpha: float = 0.2, image: str | Path | torch.Tensor | list | None = None, seed: int = 0,
                 target: int | None = 1, all_to_all: bool = False, pattern: str | None = None,
                 index: int | None = None, label: int | None = None):
        super().__init__(target=target, all_to_all=all_to_all)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Blend alpha must be in (0, 1], got {alpha}")
        self.alpha, self.seed = float(alpha), int(seed)
        kind = pattern if pattern is not None else ("noise" if image is None else "image")
        if kind not in PATTERNS:
            raise ValueError(f"blend pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
        if kind != "test_image" and (index is not None or label is not None):
            raise ValueError("blend index= and label= say which test image is blended; use them with pattern='test_image'")
        if kind == "noise" and image is not None:
            raise ValueError("blend pattern='noise' takes no image; drop image= or use pattern='image'")
        if kind == "image" and image is None:
            raise ValueError("blend pattern='image' needs image=PATH (an image file)")
        self.kind = kind
        self.index: int | None = None
        self.label: int | None = None
        self.image: Any  # a tensor, or None for noise
        if kind == "test_image":
            self.image = self._test_image(image, index, label)
            self.source = "test_image"
        else:
            self.image = _read_image(image) if isinstance(image, (str, Path)) else image
            self.source = str(image) if isinstance(image, (str, Path)) else ("tensor" if image is not None else "noise")

    def _test_image(self, image: Any, index: int | None, label: int | None) -> torch.Tensor:
        if image is None:
            raise ValueError("blend pattern='test_image' has no image yet: Blend.generate(test_set=..., "
                             "pattern='test_image') picks it from the dataset's test split; or load the trigger.json "
                             "its attack wrote")
        if isinstance(image, (str, Path)):
            raise ValueError("blend pattern='test_image' stores the test image's pixels, not a path; for an image "
                             "file use pattern='image'")
        if index is None or label is None:
            raise ValueError("blend pattern='test_image' records where its image came from: give index= (its row in "
                             "the test split) and label= (its class), as Blend.generate does")
        self.index, self.label = int(index), int(label)
        if self.target is not None and self.label == self.target:
            raise ValueError(f"blend test image {self.index} is of the target class {self.target}; pick an image of "
                             "another class")
        img = quantise(image, "blend test image")
        if float(img.min()) < 0 or float(img.max()) > 1:
            raise ValueError("blend test image must hold pixel values in [0, 1]")
        return img

    @classmethod
    def generate(cls, model=None, images: torch.Tensor | None = None, seed: int = 0, test_set: Any = None,
                 **kwargs) -> Blend:
        """Build the trigger. With ``pattern="test_image"`` and no ``image``, the image is row ``index`` of
        ``test_set`` (an :class:`~ibau.data.ImageSet` or ``(images, labels)``: the dataset's test split) or,
        without ``index``, one drawn with ``seed`` among the rows whose class is not the target."""
        if kwargs.get("pattern") != "test_image" or kwargs.get("image") is not None:
            return cls(**kwargs)
        if test_set is None:
            raise ValueError("blend pattern='test_image' blends an image of the dataset's test split, and none was "
                             "given: pass test_set= (the test split) to Blend.generate or build_attack, or rebuild the "
                             "trigger from its trigger.json")
        pics, labels = (test_set.images, test_set.labels) if hasattr(test_set, "labels") else test_set
        labels = torch.as_tensor(labels).flatten()
        index = kwargs.pop("index", None)
        target = None if kwargs.get("all_to_all") else kwargs.get("target", 1)
        if index is None:
            rows = torch.nonzero(labels != target).flatten() if target is not None else torch.arange(len(labels))
            if len(rows) == 0:
                raise ValueError(f"the test split has no image outside the target class {target} to blend; give a "
                                 "test split with other classes")
            index = int(rows[torch.randint(len(rows), (1,), generator=torch.Generator().manual_seed(seed))])
        if not 0 <= int(index) < len(labels):
            raise ValueError(f"blend index {index} is outside the test split's {len(labels)} images; give 0 to "
                             f"{len(labels) - 1}")
        index = int(index)
        return cls(**kwargs, image=pics[index], seed=seed, index=index, label=int(labels[index]))

    def pattern(self, shape: tuple[int, ...]) -> torch.Tensor:
        c, h, w = shape
        if self.image is None:
            return torch.rand(shape, generator=torch.Generator().manual_seed(self.seed))
        img = self.image.float()
        if img.shape[0] != c:
            img = img.mean(0, keepdim=True).expand(c, -1, -1) if c in (1, 3) else img
        if tuple(img.shape[1:]) != (h, w):
            img = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        return img.clamp(0, 1)

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.full(shape, self.alpha)

    def _params(self) -> dict:
        if self.kind == "test_image":
            return {"alpha": self.alpha, "image": as_list(self.image), "seed": self.seed, "pattern": "test_image",
                    "index": self.index, "label": self.label, **super()._params()}
        image = None if self.source == "noise" else self.source
        return {"alpha": self.alpha, "image": image, "seed": self.seed, **super()._params()}

    def spec(self) -> dict:
        if self.source == "tensor":
            raise ValueError("a Blend trigger built from a tensor cannot be written down; save the image and pass its path")
        return super().spec()

    def __repr__(self) -> str:
        if self.kind != "test_image":
            return super().__repr__()
        picture = f"<test image {self.index}, class {self.label}, {tuple(self.image.shape)}>"
        args = ", ".join(f"{k}={picture if k == 'image' else repr(v)}" for k, v in self._params().items())
        return f"Blend({args})"


def _read_image(path: str | Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise ValueError(f"blend image {path} does not exist")
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0
