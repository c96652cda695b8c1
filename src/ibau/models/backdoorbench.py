"""BackdoorBench's ``attack_result.pt`` (SCLBD/BackdoorBench, ``utils/save_load_attack.py``), read without
running code from it.

What the file holds (their ``save_attack_result``): one dict with ``model_name`` (e.g. ``preactresnet18``,
``vgg19_bn``), ``num_classes``, ``model`` (the state dict), ``data_path``, ``img_size`` (``[H, W, C]``),
``clean_data`` (the dataset's name: ``cifar10``, ``gtsrb``, ...), ``bd_train`` and ``bd_test``. Since their
v2 datasets, ``bd_train``/``bd_test`` are the *state* of a poisoned dataset: ``original_index_array`` and
``poison_indicator`` (numpy arrays), and ``bd_data_container`` whose ``data_dict`` maps a test-set index to
the poisoned sample. Their attacks keep the poisoned images on disk (``save_folder_path``): each entry is
``{"path": ".../bd_test_dataset/<label>/<index>.png", "other_info": [poisoned label, original label]}``,
which ``weights_only`` loading reads once numpy's array reconstructors are allowed
(:func:`ibau.models.io.read_object`). A container kept in memory holds PIL images instead, which only
code can rebuild, so such a file is refused (:mod:`ibau.models.io` says how to keep its model alone).
Older files (v1) held ``bd_test`` as ``{"x": images, "y": labels}`` tensors without their test-set indices.

Their models take inputs normalised by the dataset's mean/std (a ``transforms.Normalize`` outside the
model); ibau puts the same normalisation in front of the network (:data:`NORMALIZATION`), so datasets,
triggers and δ stay in pixel space. The architecture is ``bb:<model_name>``
(:mod:`ibau.models.external`).

The poisoned test set gives ASR without a trigger spec (:class:`PoisonedTestSet`): each held-out image
of ``--dataset`` is replaced by BackdoorBench's poisoned version of the same test image, matched by its
index in the test split (checked against the labels the file records).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..attacks.base import Trigger
from .io import ModelCard, state_dict_of

logger = logging.getLogger(__name__)

#: The keys by which an ``attack_result.pt`` is recognised.
KEYS = ("model_name", "num_classes", "model")

#: BackdoorBench's normalisation of each dataset it names (``get_dataset_normalization``); None: none
#: (their GTSRB and CelebA use mean 0, std 1).
NORMALIZATION: dict[str, tuple[list[float], list[float]] | None] = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
    "mnist": ([0.5], [0.5]),
    "tiny": ([0.4802, 0.4481, 0.3975], [0.2302, 0.2265, 0.2262]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    "gtsrb": None,
    "celeba": None,
}


def is_attack_result(obj: Any) -> bool:
    """Whether a checkpoint object is a BackdoorBench ``attack_result.pt`` (or its ``defense_result.pt``)."""
    return isinstance(obj, dict) and all(k in obj for k in KEYS) and isinstance(obj["model"], dict)


def card_for(obj: dict, name: str, arch: str | None = None, num_classes: int | None = None,
             normalization: dict[str, list[float]] | None = None) -> ModelCard:
    """The model card of a BackdoorBench result: ``bb:<model_name>``, its class count, input shape
    (``img_size``) and normalisation (``clean_data``); ``arch``/``num_classes``/``normalization`` given by
    the caller (``--arch``, ``--num-classes``, ``--normalize``) win."""
    model_name = str(obj["model_name"])
    classes = int(num_classes if num_classes is not None else obj["num_classes"])
    size = [int(v) for v in obj.get("img_size") or [32, 32, 3]]
    if len(size) != 3:
        raise ValueError(f"{name}'s img_size {size} is not [H, W, C]; pass the model as a plain state dict with --arch")
    h, w, c = size
    dataset = obj.get("clean_data")
    if normalization is None:
        if dataset not in NORMALIZATION:
            raise ValueError(f"{name} was made on {dataset!r}, whose normalisation ibau does not know; pass --normalize "
                             "MEAN,STD (or M1,M2,M3/S1,S2,S3) as its models were trained")
        norm = NORMALIZATION[dataset]
        normalization = None if norm is None else {"mean": norm[0] * (c if len(norm[0]) == 1 else 1),
                                                   "std": norm[1] * (c if len(norm[1]) == 1 else 1)}
    card = ModelCard(arch or f"bb:{model_name}", classes, [c, h, w], normalization,
                     metadata={"source": "backdoorbench", "file": name, "model_name": model_name, "clean_data": dataset})
    logger.info("%s is a BackdoorBench result: %s, %d classes, %dx%dx%d images, %s", name, card.arch, classes, c, h, w,
                f"normalised by {dataset}'s mean/std in front of the model" if normalization else "no normalisation")
    return card


def state_of(obj: dict, name: str) -> dict[str, torch.Tensor]:
    """The model's state dict (``module.`` prefixes dropped)."""
    return state_dict_of({"model": obj["model"]}, name)


@dataclass
class PoisonedTestSet:
    """BackdoorBench's poisoned test images: test-split ``indices``, their original ``labels``, poisoned
    ``bd_labels``, and where each image is (``paths`` under the file's folder)."""

    indices: list[int]
    labels: list[int]
    bd_labels: list[int]
    paths: list[Path]
    split_size: int | None  # length of the test split it was made from (poison_indicator)


def poisoned_test_set(obj: dict, folder: Path, name: str) -> PoisonedTestSet | str:
    """The poisoned test set a BackdoorBench result carries, or why it gives none (one line).

    Images are looked up only under ``folder`` (the file's own): ``<folder>/<bd_test folder>/<label>/<index>.png``,
    whatever absolute path the file recorded."""
    bd = obj.get("bd_test")
    if bd is None:
        return f"{name} carries no poisoned test set (bd_test)"
    if isinstance(bd, dict) and "x" in bd and "y" in bd:
        return (f"{name}'s bd_test (an older BackdoorBench format) holds images without their test-set indices, so they "
                "cannot be matched to the held-out split")
    container = bd.get("bd_data_container") if isinstance(bd, dict) else None
    data = container.get("data_dict") if isinstance(container, dict) else None
    if not isinstance(bd, dict) or not isinstance(container, dict) or not isinstance(data, dict) or not data:
        return f"{name}'s bd_test has no poisoned samples ibau can read"
    save_folder = container.get("save_folder_path") or bd.get("save_folder_path")
    indices, labels, bd_labels, paths = [], [], [], []
    for key, entry in data.items():
        if not (isinstance(entry, dict) and "path" in entry and len(entry.get("other_info") or []) >= 2):
            return f"{name}'s bd_test keeps its poisoned images in memory, not as image files; ibau cannot read them"
        stored = Path(str(entry["path"]))
        parts = stored.parts
        top = Path(str(save_folder)).name if save_folder else "bd_test_dataset"
        rel = Path(*parts[parts.index(top):]) if top in parts else Path(*parts[-3:])
        if ".." in rel.parts:
            return f"{name}'s bd_test names image paths outside its folder ({stored}); ibau reads none of them"
        indices.append(int(key))
        bd_labels.append(int(entry["other_info"][0]))
        labels.append(int(entry["other_info"][1]))
        paths.append(folder / rel)
    indicator = bd.get("poison_indicator")
    size = len(indicator) if isinstance(indicator, (np.ndarray, list, torch.Tensor)) else None
    return PoisonedTestSet(indices, labels, bd_labels, paths, size)


def _key(image: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes(), digest_size=16).digest()


class PoisonedTestTrigger(Trigger):
    """A trigger given by examples: each clean held-out image is replaced by its poisoned version from the
    model's own poisoned test set (BackdoorBench's ``bd_test``), found by the image's exact pixels. It only
    stamps the images it was built for (the held-out split); its :meth:`picture` is the first pair's
    difference, for ``delta.png``."""

    name = "backdoorbench_bd_test"

    def __init__(self, table: dict[bytes, torch.Tensor], target: int | None, all_to_all: bool, source: str,
                 picture: torch.Tensor):
        super().__init__(target=target, all_to_all=all_to_all)
        self.table, self.source, self._picture = table, source, picture

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for image in x:
            poisoned = self.table.get(_key(image))
            if poisoned is None:
                raise ValueError(f"an image has no poisoned version in {self.source}; this trigger only stamps the "
                                 "held-out images it was built for")
            out.append(poisoned)
        return torch.stack(out).to(x.device, x.dtype) if out else x.clone()

    def picture(self, shape: tuple[int, ...]) -> torch.Tensor:
        """|poisoned − clean| of one held-out image: where the trigger is."""
        return self._picture

    def _params(self) -> dict:
        return {"source": self.source, "images": len(self.table), **super()._params()}


def _read_png(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB" if shape[0] == 3 else "L")
        arr = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(arr.copy()).float().div_(255.0)
    t = t.permute(2, 0, 1) if t.dim() == 3 else t.unsqueeze(0)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"poisoned image {path.name} is {tuple(t.shape)}, the dataset's are {shape}")
    return t


def carried_trigger(pts: PoisonedTestSet, test_images: torch.Tensor, test_labels: torch.Tensor,
                    held_indices: torch.Tensor, num_classes: int, name: str) -> PoisonedTestTrigger | str:
    """The :class:`PoisonedTestTrigger` of ``pts`` for the held-out images ``held_indices`` of the test
    split, or why it cannot be built (one line): the split must be the one the file was made on (same
    size, and the labels it records at its indices)."""
    n = len(test_labels)
    if pts.split_size is not None and pts.split_size != n:
        return f"{name}'s poisoned test set comes from a test split of {pts.split_size} images, --dataset's has {n}"
    if any(not 0 <= i < n for i in pts.indices):
        return f"{name}'s poisoned test set indexes beyond --dataset's {n} test images"
    wrong = sum(int(test_labels[i]) != y for i, y in zip(pts.indices, pts.labels))
    if wrong:
        return (f"{name}'s poisoned test set does not line up with --dataset's test split ({wrong} of {len(pts.indices)} "
                "labels differ at its indices); use the test split it was made on, in its order")
    targets = set(pts.bd_labels)
    if len(targets) == 1:
        target, all_to_all = targets.pop(), False
    elif all(b == (y + 1) % num_classes for b, y in zip(pts.bd_labels, pts.labels)):
        target, all_to_all = None, True
    else:
        return f"{name}'s poisoned labels are neither one target nor y+1 (all-to-all)"
    entry = {i: k for k, i in enumerate(pts.indices)}
    held = [int(i) for i in held_indices if all_to_all or int(test_labels[int(i)]) != target]
    missing = [i for i in held if i not in entry]
    if missing:
        return f"{len(missing)} held-out test images (e.g. index {missing[0]}) have no poisoned version in {name}"
    absent = [pts.paths[entry[i]] for i in held if not pts.paths[entry[i]].is_file()]
    if absent:
        return (f"{name}'s poisoned test images are image files beside it, and {len(absent)} are missing (e.g. "
                f"{absent[0]}); copy its {absent[0].parent.parent.name}/ folder next to the file")
    shape = tuple(int(s) for s in test_images.shape[1:])
    table: dict[bytes, torch.Tensor] = {}
    for i in held:
        table[_key(test_images[i])] = _read_png(pts.paths[entry[i]], shape)
    first = held[0] if held else None
    picture = ((table[_key(test_images[first])] - test_images[first]).abs().clamp(0, 1) if first is not None
               else torch.zeros(shape))
    logger.info("ASR from %s's own poisoned test set: %d held-out images, %s", name, len(held),
                "all-to-all" if all_to_all else f"target {target}")
    return PoisonedTestTrigger(table, target, all_to_all, f"{name} bd_test", picture)
