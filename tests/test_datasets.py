"""Dataset loaders read tiny files written in each real on-disk format."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ibau.data import DATASETS, load_dataset
from ibau.data.cifar10 import load_cifar10
from ibau.data.gtsrb import load_gtsrb
from ibau.data.imagefolder import load_imagefolder

SHARED_CIFAR = Path(__file__).resolve().parents[1] / "../shared/data/cifar10.npz"


def _write_cifar(root: Path, per_batch: int = 4) -> dict[str, np.ndarray]:
    """The python release's layout: pickled dicts, images uint8 N×3072 flattened channel-major (C, H, W).

    The release was pickled by Python 2, whose str keys torchvision reads back (``encoding="latin1"``) as the
    str keys ``"data"``/``"labels"``; a Python 3 writer must use str keys too (bytes keys stay bytes).
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f, protocol=2)
        written[name] = data
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, f, protocol=2)
    return written


@pytest.fixture
def no_md5(monkeypatch):
    """torchvision checks the real files' md5 sums; the tiny stand-ins cannot match them."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # batches.meta, checked in _load_meta


def test_cifar10_reads_python_batches(tmp_path, no_md5):
    written = _write_cifar(tmp_path)
    train, test = load_cifar10(tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    assert train.images.dtype == torch.float32 and 0 <= float(train.images.min()) and float(train.images.max()) <= 1
    assert train.labels.dtype == torch.int64
    assert train.labels[:4].tolist() == [0, 1, 2, 3] and test.labels.tolist() == [5, 6, 7, 8]
    # A pixel round-trips exactly: byte c*1024 + h*32 + w of a row is channel c, row h, column w.
    c, h, w = 2, 7, 19
    v = int(written["test_batch"][1, c * 1024 + h * 32 + w])
    assert float(test.images[1, c, h, w]) == pytest.approx(v / 255, abs=1e-7)
    v = int(written["data_batch_2"][0, c * 1024 + h * 32 + w])
    assert float(train.images[4, c, h, w]) == pytest.approx(v / 255, abs=1e-7)
    limited, _ = load_cifar10(tmp_path, train_limit=6)
    assert len(limited) == 6 and torch.equal(limited.images, train.images[:6])


def _ppm(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _write_gtsrb(root: Path) -> None:
    base = root / "gtsrb"
    for cls, sizes in ((0, [(30, 31), (45, 40)]), (2, [(50, 52)])):
        for j, size in enumerate(sizes):
            _ppm(base / "GTSRB" / "Training" / f"{cls:05d}" / f"00000_{j:05d}.ppm", size, (10 * cls, 100, 200))
    rows = [("00000.ppm", (29, 33), 2), ("00001.ppm", (64, 60), 0), ("00002.ppm", (40, 41), 42)]
    for name, size, _ in rows:
        _ppm(base / "GTSRB" / "Final_Test" / "Images" / name, size, (200, 50, 25))
    lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    lines += [f"{name};{w};{h};5;5;{w - 5};{h - 5};{cls}" for name, (w, h), cls in rows]
    (base / "GT-final_test.csv").write_text("\n".join(lines) + "\n")


def test_gtsrb_resizes_and_keeps_class_ids(tmp_path):
    _write_gtsrb(tmp_path)
    train, test = load_gtsrb(tmp_path)
    assert train.images.shape == (3, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.labels.tolist() == [0, 0, 2]  # the folder's class id, even with folder 00001 absent
    assert test.labels.tolist() == [2, 0, 42]
    # Uniform colours survive the bilinear resize exactly.
    assert torch.allclose(test.images[0, :, 5, 5], torch.tensor([200, 50, 25]) / 255)
    assert torch.allclose(train.images[2, :, 31, 0], torch.tensor([20, 100, 200]) / 255)
    assert DATASETS["gtsrb"].num_classes == 43
    small, _ = load_gtsrb(tmp_path, size=16, train_limit=2)
    assert small.images.shape == (2, 3, 16, 16)


@pytest.mark.parametrize("name, marker", [("cifar10", "cifar-10-batches-py"), ("gtsrb", "gtsrb")])
def test_missing_files_name_the_fix(tmp_path, name, marker):
    with pytest.raises(ValueError) as e:
        load_dataset(name, data_dir=tmp_path, download=False)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "--download" in msg and marker in msg


def _write_folder(root: Path, classes: dict[str, list[tuple[int, int]]], colour_of) -> None:
    for cls, sizes in classes.items():
        for j, size in enumerate(sizes):
            path = root / cls / f"img{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, colour_of(cls)).save(path)


def test_imagefolder_reads_train_and_test(tmp_path):
    colour = {"cat": (255, 0, 0), "dog": (0, 0, 255)}.__getitem__
    _write_folder(tmp_path / "train", {"cat": [(20, 20), (40, 33), (32, 32)], "dog": [(64, 64), (10, 12)]}, colour)
    _write_folder(tmp_path / "test", {"cat": [(50, 50)], "dog": [(31, 30), (33, 33)]}, colour)
    train, test = load_imagefolder(tmp_path)
    assert train.images.shape == (5, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert train.labels.tolist() == [0, 0, 0, 1, 1] and test.labels.tolist() == [0, 1, 1]
    assert torch.allclose(train.images[0, :, 3, 3], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(test.images[2, :, 30, 30], torch.tensor([0.0, 0.0, 1.0]))
    via_registry, _ = load_dataset("imagefolder", data_dir=tmp_path, train_limit=2)
    assert len(via_registry) == 2


def test_imagefolder_class_mismatch_is_one_line(tmp_path):
    _write_folder(tmp_path / "train", {"cat": [(8, 8)], "dog": [(8, 8)]}, lambda c: (1, 2, 3))
    _write_folder(tmp_path / "test", {"cat": [(8, 8)], "cow": [(8, 8)]}, lambda c: (1, 2, 3))
    with pytest.raises(ValueError, match=r"only in train: \['dog'\].*only in test: \['cow'\]") as e:
        load_imagefolder(tmp_path)
    assert "\n" not in str(e.value)


def test_imagefolder_missing_split(tmp_path):
    _write_folder(tmp_path / "train", {"cat": [(8, 8)]}, lambda c: (1, 2, 3))
    with pytest.raises(ValueError, match="test does not exist"):
        load_imagefolder(tmp_path)


def test_npz_via_registry(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, size=(7, 8, 8, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(7, dtype=np.int64) % 3,
             x_test=x_test, y_test=np.array([2, 1, 0], dtype=np.int64))
    train, test = load_dataset("npz", data_dir=path, train_limit=5)
    assert train.images.shape == (5, 3, 8, 8) and test.images.shape == (3, 3, 8, 8)
    assert train.labels.tolist() == [0, 1, 2, 0, 1] and test.labels.tolist() == [2, 1, 0]
    assert float(test.images[2, 1, 4, 6]) == pytest.approx(x_test[2, 4, 6, 1] / 255, abs=1e-7)


def test_digits_via_registry():
    train, test = load_dataset("digits")
    assert train.images.shape == (1297, 3, 32, 32) and test.images.shape == (500, 3, 32, 32)
    assert DATASETS["digits"].num_classes == 10
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    again, _ = load_dataset("digits")
    assert torch.equal(again.labels, train.labels)  # the split is seeded
    # train and test are disjoint images
    flat_train = {row.numpy().tobytes() for row in train.images[:, 0, ::4, ::4]}
    assert sum(row.numpy().tobytes() in flat_train for row in test.images[:, 0, ::4, ::4]) < 10


def test_registry_errors():
    assert set(DATASETS) == {"digits", "cifar10", "gtsrb", "npz", "imagefolder"}
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; choose one of: digits, cifar10"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match=r"dataset 'cifar10' needs --data-dir"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="train limit"):
        load_dataset("digits", train_limit=0)
    assert all(spec.needs_path == (name != "digits") for name, spec in DATASETS.items())


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="shared/data/cifar10.npz is not present")
@pytest.mark.slow
def test_shared_cifar10_npz():
    train, test = load_dataset("npz", data_dir=SHARED_CIFAR)
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (10_000, 3, 32, 32)
    assert int(train.labels.max()) == 9 == int(test.labels.max())
