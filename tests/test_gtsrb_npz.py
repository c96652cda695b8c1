"""Issue 17: GTSRB from an npz file (the class count read from the file, not assumed to be 10), the
`cpu_gtsrb` bench preset, and the report's chance level from the records' class count."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ibau.bench import PRESETS, SUITES, expand, run_bench
from ibau.bench import aggregate as agg
from ibau.bench.grid import Context, model_dir, run_train
from ibau.data import load_dataset
from ibau.data.gtsrb import NUM_CLASSES, load_gtsrb
from ibau.models.io import ModelCard, card_path
from ibau.training import RECIPES

SHARED_GTSRB = Path(__file__).resolve().parents[1] / "../shared/data/gtsrb.npz"


def write_npz(path: Path, classes: int = NUM_CLASSES, n_train: int = 2 * NUM_CLASSES, size: int = 8,
              **extra) -> Path:
    """A tiny dataset laid out like shared/data/gtsrb.npz: labels 0..classes-1 cycling, a train_track member."""
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n_train, size, size, 3), dtype=np.uint8),
             y_train=np.arange(n_train, dtype=np.int64) % classes,
             train_track=np.arange(n_train, dtype=np.int32) // 30,
             x_test=rng.integers(0, 256, (classes, size, size, 3), dtype=np.uint8),
             y_test=np.arange(classes, dtype=np.int64)[::-1].copy(), **extra)
    return path


# --- data ------------------------------------------------------------------------------------------
def test_npz_with_43_classes_keeps_every_label(tmp_path):
    path = write_npz(tmp_path / "g.npz")
    train, test = load_dataset("npz", data_dir=path, train_limit=50)
    assert len(train) == 50 and train.labels.tolist()[:3] == [0, 1, 2]
    assert int(max(train.labels.max(), test.labels.max())) + 1 == 43  # the count training derives
    assert sorted(test.labels.tolist()) == list(range(43))


@pytest.mark.parametrize("extra", [{"num_classes": np.int64(43)}, {"class_names": np.array([f"c{i}" for i in range(43)])}])
def test_npz_declared_class_count_is_accepted(tmp_path, extra):
    train, _ = load_dataset("npz", data_dir=write_npz(tmp_path / "g.npz", **extra))
    assert int(train.labels.max()) == 42


@pytest.mark.parametrize("extra, match", [
    ({"num_classes": np.int64(10)}, r"y_train holds label 42 but the dataset has 10 classes \(0..9\)"),
    ({"class_names": np.array(["a", "b"])}, r"holds label 42 but the dataset has 2 classes"),
    ({"num_classes": np.array([43, 1])}, r"num_classes must be one positive whole number"),
])
def test_npz_labels_out_of_the_declared_range_are_one_line(tmp_path, extra, match):
    with pytest.raises(ValueError, match=match) as e:
        load_dataset("npz", data_dir=write_npz(tmp_path / "g.npz", **extra))
    assert "\n" not in str(e.value)


def test_gtsrb_reads_an_npz_file_or_a_folder_holding_gtsrb_npz(tmp_path):
    path = write_npz(tmp_path / "gtsrb.npz", size=32)
    by_file, test = load_dataset("gtsrb", data_dir=path, train_limit=43)
    by_folder, _ = load_gtsrb(tmp_path, train_limit=43)
    assert by_file.images.shape == (43, 3, 32, 32) and test.images.shape == (43, 3, 32, 32)
    assert by_file.labels.tolist() == list(range(43)) == by_folder.labels.tolist()  # the first rows, in order


def test_gtsrb_npz_must_hold_43_classes_at_the_asked_size(tmp_path):
    with pytest.raises(ValueError, match="declares 10 classes but this dataset has 43"):
        load_gtsrb(write_npz(tmp_path / "a.npz", size=32, num_classes=np.int64(10)))
    with pytest.raises(ValueError, match=r"y_train holds label 43 but the dataset has 43 classes \(0..42\)"):
        load_gtsrb(write_npz(tmp_path / "b.npz", classes=44, size=32))
    with pytest.raises(ValueError, match="holds 8×8 images, not 32×32; use size=8"):
        load_gtsrb(write_npz(tmp_path / "c.npz", size=8))
    with pytest.raises(ValueError, match="dataset file .*missing.npz does not exist"):
        load_gtsrb(tmp_path / "missing.npz")


@pytest.mark.skipif(not SHARED_GTSRB.exists(), reason="shared/data/gtsrb.npz is not present")
@pytest.mark.slow
def test_shared_gtsrb_npz():
    train, test = load_dataset("gtsrb", data_dir=SHARED_GTSRB, train_limit=20_000)
    assert train.images.shape == (20_000, 3, 32, 32) and test.images.shape == (12_630, 3, 32, 32)
    assert set(train.labels.tolist()) == set(range(43)) == set(test.labels.tolist())


# --- the bench preset ------------------------------------------------------------------------------
def test_cpu_gtsrb_preset_is_the_cpu_recipe_on_gtsrb(tmp_path):
    preset, cpu = PRESETS["cpu_gtsrb"], PRESETS["cpu"]
    assert preset.dataset == "gtsrb" and preset.needs_data_dir and preset.clean_size == 5000
    assert {"epochs": preset.epochs, "train_limit": preset.train_limit} == RECIPES["cpu"]
    assert dataclasses.replace(preset, name="cpu", dataset="npz", defense_options=cpu.defense_options) == cpu
    # the one difference in the defenses' settings: FT-SAM takes BackdoorBench's GTSRB setting (ρ 8, no smoothing)
    differ = {m for m in {*preset.defense_options, *cpu.defense_options}
              if preset.defense_options.get(m) != cpu.defense_options.get(m)}
    assert differ == {"ft_sam"}
    assert preset.defense_options["ft_sam"] == {**cpu.defense_options["ft_sam"], "rho": 8.0, "label_smoothing": 0.0}
    plan = expand(SUITES["one_trigger"], preset)
    assert {t.dataset for t in plan.trains} == {"gtsrb"}
    with pytest.raises(ValueError, match="preset 'cpu_gtsrb' uses dataset 'gtsrb', which needs --data-dir"):
        run_bench("efficiency", "cpu_gtsrb", tmp_path / "out")


def test_bench_help_lists_cpu_gtsrb():
    from typer.testing import CliRunner

    from ibau.cli import app

    result = CliRunner().invoke(app, ["bench", "--help"], terminal_width=400)
    assert result.exit_code == 0 and "cpu_gtsrb" in result.output


def test_train_record_carries_the_class_count(tmp_path, monkeypatch):
    """The grid's train record takes num_classes from the model card (a stand-in training writes it)."""
    import ibau.pipeline.train as train_module

    def fake_train(dataset, attack, out, **kwargs):
        card = ModelCard("small_vgg", 43, [3, 32, 32])
        Path(out).mkdir(parents=True, exist_ok=True)
        card_path(Path(out) / "model.safetensors").write_text(json.dumps(dataclasses.asdict(card)))
        return {"test": {"acc": 0.9, "asr": 1.0}, "train_size": 20_000}

    monkeypatch.setattr(train_module, "train_poisoned", fake_train)
    job = expand(SUITES["efficiency"], PRESETS["cpu_gtsrb"]).trains[0]
    ctx = Context(str(tmp_path), "gtsrb.npz", "cpu")
    record = run_train(job, None, ctx)
    assert record["status"] == "ok" and record["num_classes"] == 43
    assert model_dir(ctx, job).exists()


# --- chance level in the report --------------------------------------------------------------------
def _cell(method: str, acc: float, asr: float, classes: int | None = None, train_classes: int | None = None) -> dict:
    record = {"status": "ok", "before": {"acc": 0.85, "asr": 0.99}, "after": {"acc": acc, "asr": asr}}
    if classes is not None:
        record["num_classes"] = classes
    train = {"status": "ok", "num_classes": train_classes} if train_classes is not None else None
    return {"method": method, "record": record, "train_record": train}


def test_verdict_uses_chance_level_of_43_classes():
    # I-BAU 4 ACC points below NAD and 3 ASR points above: only the chance-level clause can save it.
    def row(ibau_asr: float, **classes) -> dict:
        return {"ibau": [_cell("ibau", 0.80, ibau_asr, **classes)], "nad": [_cell("nad", 0.84, 0.0, **classes)]}

    assert agg.verdict(row(0.03, classes=10)).kind == "comparable"  # 3% ≤ 1/10
    assert agg.verdict(row(0.03, classes=43)).kind == "worse"  # 3% > 1/43 (2.3%)
    assert agg.verdict(row(0.02, classes=43)).kind == "comparable"  # 2% ≤ 1/43
    assert agg.verdict(row(0.03, train_classes=43)).kind == "worse"  # the count of the training job's record
    assert agg.verdict(row(0.03)).kind == "comparable"  # an old record without a count: 10 classes


def test_paper_numbers_stand_beside_cifar10_or_43_class_gtsrb_runs_only():
    def run(dataset: str, classes: int) -> dict:
        return {"suite": {"paper": "table1"}, "preset": {"dataset": dataset},
                "cells": [_cell("ibau", 0.8, 0.1, classes)]}

    assert agg.class_count(run("npz", 43)["cells"]) == 43
    assert agg.paper_table(run("npz", 10)) == "table1"
    assert agg.paper_table(run("npz", 43)) is None  # gtsrb.npz through --dataset npz
    assert agg.paper_table(run("gtsrb", 43)) == "table2"  # GTSRB one_trigger: the paper's Table 2
