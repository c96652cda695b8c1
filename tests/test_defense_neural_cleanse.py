"""Neural Cleanse and TABOR (SPEC §3): detection of the BadNets target, trigger location, unlearning."""
import doctest
import time

import pytest
import torch
import torch.nn.functional as F

from conftest import class_searches, held_metrics, held_monitor, same_state, snapshot, tiny_net
from ibau.data import ImageSet
from ibau.defenses import make_defense
from ibau.defenses import neural_cleanse as nc_module
from ibau.defenses import tabor as tabor_module
from ibau.defenses.neural_cleanse import NeuralCleanse, NeuralCleanseConfig, anomaly_index, flag_outliers, reverse_engineer
from ibau.defenses.tabor import TABOR, TABORConfig, tabor_regulariser

#: Cheap reverse-engineering for the 2-core test machine: 200 clean digits, batches of 8, a larger Adam
#: step and a shorter λ patience than the defaults so the masks shrink within a few dozen steps.
FAST = dict(batch_size=8, lr=0.3, patience=5, epoch_steps=1, early_stop_patience=None, detect_images=200, device="cpu",
            seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _trigger_region(trigger, shape, dilation: int = 2) -> torch.Tensor:
    """The BadNets square (H×W bool), dilated by ``dilation`` pixels."""
    square = trigger.mask(shape)[0] > 0
    k = 2 * dilation + 1
    return F.max_pool2d(square[None, None].float(), k, stride=1, padding=dilation)[0, 0] > 0


def _defend(digits_backdoor, defense):
    d = digits_backdoor
    before = snapshot(d["model"])
    monitor = held_monitor(d)
    t0 = time.perf_counter()
    result = defense.run(d["model"], d["clean"], callback=monitor, progress=False)
    wall = time.perf_counter() - t0
    after = held_metrics(d, result.model)
    inside = _trigger_region(d["trigger"], d["clean"].shape)
    masks = {t: r["mask"][0] for t, r in result.triggers.items()}
    share = {t: float(m[inside].sum() / m.sum()) for t, m in masks.items()}
    print(f"\n{defense.name}: {wall:.1f}s wall, flagged={result.flagged}, "
          f"anomaly={ {t: round(a, 2) for t, a in result.anomaly.items()} }, "
          f"mask_l1={ {t: round(v, 1) for t, v in result.extra['mask_l1'].items()} }, "
          f"mass near trigger (target)={share[d['trigger'].target]:.2f}, before={d['before']}, after={after}")
    return {"result": result, "after": after, "share": share, "model_before": before}


@pytest.fixture(scope="module")
def nc_run(digits_backdoor):
    return _defend(digits_backdoor, NeuralCleanse(steps=40, **FAST))


@pytest.fixture(scope="module")
def tabor_run(digits_backdoor):
    return _defend(digits_backdoor, TABOR(steps=40, **FAST))


# --- Neural Cleanse on the BadNets digits model --------------------------------------------------------
def test_nc_flags_only_the_badnets_target(nc_run, digits_backdoor):
    r = nc_run["result"]
    target = digits_backdoor["trigger"].target
    assert r.flagged == [target]
    assert r.anomaly[target] > 2.0
    l1 = r.extra["mask_l1"]
    assert l1[target] == min(l1.values())
    assert l1[target] < 0.25 * sorted(l1.values())[len(l1) // 2]  # far below the median class
    assert all(r.extra["threshold_reached"].values())


def test_nc_mask_sits_on_the_trigger(nc_run, digits_backdoor):
    target = digits_backdoor["trigger"].target
    assert nc_run["share"][target] > 0.5  # most of the recovered mask mass within 2 px of the 4×4 square
    others = [s for t, s in nc_run["share"].items() if t != target]
    assert max(others) < 0.2  # the other classes' masks are elsewhere


def test_nc_unlearning_removes_the_backdoor(nc_run, digits_backdoor):
    before, after = digits_backdoor["before"], nc_run["after"]
    assert before["asr"] > 0.9
    assert after["asr"] < 0.2 and after["asr"] < before["asr"] - 0.7
    assert after["acc"] > before["acc"] - 0.05
    r = nc_run["result"]
    assert [h["step"] for h in r.history] == ["detect", "unlearn epoch 1", "unlearn epoch 2"]
    assert r.history[0]["asr"] > 0.9  # detection alone leaves the model as it was
    assert r.time_to_effect is not None and r.time_to_effect <= r.seconds
    assert r.seconds > 0


def test_nc_result_fields_and_caller_model_untouched(nc_run, digits_backdoor):
    r = nc_run["result"]
    model = digits_backdoor["model"]
    assert same_state(nc_run["model_before"], model)
    assert r.model is not model and not r.model.training
    assert sorted(r.triggers) == sorted(r.anomaly) == list(range(10))
    for trig in r.triggers.values():
        assert trig["mask"].shape == (1, 32, 32) and trig["pattern"].shape == (3, 32, 32)
        for t in trig.values():
            assert t.min() >= 0 and t.max() <= 1
    assert all(isinstance(a, float) for a in r.anomaly.values())
    assert r.summary()["flagged"] == r.flagged


# --- TABOR ------------------------------------------------------------------------------------------------
def test_tabor_flags_the_target_and_unlearns(tabor_run, digits_backdoor):
    r = tabor_run["result"]
    target = digits_backdoor["trigger"].target
    assert r.flagged == [target]
    assert tabor_run["share"][target] > 0.5
    before, after = digits_backdoor["before"], tabor_run["after"]
    assert after["asr"] < 0.2 and after["acc"] > before["acc"] - 0.05
    model = digits_backdoor["model"]
    assert same_state(tabor_run["model_before"], model)


def test_tabor_regulariser_terms():
    torch.manual_seed(0)
    model = tiny_net(4).eval()
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    mask, pattern = torch.zeros(1, 8, 8), torch.zeros(3, 8, 8)
    off = dict(mask_elastic=0, pattern_elastic=0, mask_smooth=0, pattern_smooth=0, blocking=0, overlaying=0)
    assert float(tabor_regulariser(**off)(model, x, y, mask, pattern, 1)) == 0.0
    # an empty trigger: R3 is the plain cross-entropy of the clean images against their labels
    r3 = tabor_regulariser(**{**off, "blocking": 1.0})(model, x, y, mask, pattern, 1)
    assert torch.isclose(r3, F.cross_entropy(model(x), y))
    # a full 8×8 mask: mask elastic = ‖m‖₁ + ‖m‖₂² = 64 + 64, its smoothness 0
    full = torch.ones(1, 8, 8)
    r1 = tabor_regulariser(**{**off, "mask_elastic": 1.0, "mask_smooth": 1.0})(model, x, y, full, pattern, 1)
    assert float(r1) == pytest.approx(128.0)
    with pytest.raises(ValueError, match="labels"):
        tabor_regulariser(blocking=1.0)(model, x, None, mask, pattern, 1)


# --- pieces shared by both ---------------------------------------------------------------------------
def test_anomaly_index_is_mad_based():
    idx = anomaly_index([10.0, 11.0, 9.0, 10.0, 2.0])
    assert torch.allclose(idx, torch.tensor([0.0, 1, 1, 0, 8]) / 1.4826)
    zero_mad = anomaly_index([3.0, 3.0, 3.0, 1.0])
    assert zero_mad[:3].tolist() == [0.0, 0.0, 0.0] and zero_mad[3] == float("inf")
    # only unusually SMALL triggers are flagged; a huge one is not a backdoor sign
    assert flag_outliers([10.0, 11.0, 9.0, 10.0, 2.0, 30.0]) == [4]
    assert flag_outliers([10.0, 11.0, 9.0, 10.0, 40.0]) == []
    assert flag_outliers([10.0, 11.0, 9.0, 10.0, 2.0], threshold=10.0) == []
    with pytest.raises(ValueError):
        anomaly_index([])


def test_reverse_engineer_is_seeded_and_leaves_the_model_alone(tiny_task):
    model, x, y = tiny_task
    before = snapshot(model)
    a, b = (reverse_engineer(model, x, 2, labels=y, steps=5, batch_size=16,
                             generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.pattern, b.pattern) and a.l1 == b.l1
    assert a.mask.shape == (1, 8, 8) and a.pattern.shape == (3, 8, 8)
    assert same_state(before, model)
    assert not model.training


def test_reverse_engineer_epochs_and_early_stop(tiny_task):
    """The schedule acts once per epoch of ``epoch_steps`` mini-batches; the authors' early stop ends the
    search once λ went both up and down and the recorded mask stopped shrinking."""
    model, x, y = tiny_task
    kw = dict(steps=600, batch_size=16, lr=0.3, epoch_steps=3, patience=2, success_threshold=0.9)
    stopped = reverse_engineer(model, x, 0, early_stop_patience=4, **kw)
    assert stopped.reached and stopped.steps_run < 600 and stopped.steps_run % 3 == 0
    full = reverse_engineer(model, x, 0, early_stop_patience=None, **kw)
    assert full.steps_run == 600 and full.l1 <= stopped.l1
    with pytest.raises(ValueError, match="epoch_steps"):
        reverse_engineer(model, x, 0, steps=5, epoch_steps=0)


@pytest.mark.parametrize("cls", [NeuralCleanse, TABOR])
def test_nothing_flagged_returns_the_model_unchanged(tiny_task, cls):
    model, x, y = tiny_task
    defense = cls(steps=3, batch_size=16, anomaly_threshold=1e9, device="cpu")
    calls = []
    result = defense.run(model, ImageSet(x, y), callback=lambda m, s: calls.append(s), progress=False)
    assert result.flagged == [] and len(result.triggers) == 4 and len(result.anomaly) == 4
    assert [h["step"] for h in result.history] == ["detect"] and len(calls) == 1
    assert same_state(model, result.model)
    assert result.model is not model


@pytest.mark.parametrize("cls", [NeuralCleanse, TABOR])
def test_a_stopped_search_resumes_from_the_classes_it_kept(tiny_task, tmp_path, monkeypatch, cls):
    """With a resume folder each class's search is kept as it ends: a run stopped after two classes and started
    again searches only the other two and gives the uninterrupted run's triggers, flags and model, with the
    kept classes' seconds counted; what another run kept is searched again, not used."""
    model, x, y = tiny_task
    kw = dict(steps=30, batch_size=16, lr=0.3, epoch_steps=1, patience=3, early_stop_patience=None, device="cpu",
              unlearn_epochs=1)
    whole = cls(**kw).run(model, ImageSet(x, y), progress=False)
    real, calls = nc_module.reverse_engineer, []
    monkeypatch.setattr(nc_module, "reverse_engineer", class_searches(real, calls, stop_after=2))
    with pytest.raises(KeyboardInterrupt):
        cls(**kw).run(model, ImageSet(x, y), progress=False, resume_dir=tmp_path)
    assert calls == [0, 1] and sorted(f.name for f in tmp_path.iterdir()) == ["class_0.pt", "class_1.pt"]
    monkeypatch.setattr(nc_module, "reverse_engineer", class_searches(real, calls))
    resumed = cls(**kw).run(model, ImageSet(x, y), progress=False, resume_dir=tmp_path)
    assert calls == [0, 1, 2, 3] and resumed.extra["resumed_parts"] == 2 and "resumed_parts" not in whole.extra
    for t in range(4):
        assert torch.equal(resumed.triggers[t]["mask"], whole.triggers[t]["mask"])
    assert resumed.flagged == whole.flagged and resumed.extra["mask_l1"] == whole.extra["mask_l1"]
    assert same_state(resumed.model, whole.model)
    assert resumed.seconds >= sum(torch.load(tmp_path / f"class_{t}.pt", weights_only=True)["seconds"] for t in (0, 1))
    other = cls(**{**kw, "seed": 1}).run(model, ImageSet(x, y), progress=False, resume_dir=tmp_path)
    assert calls == [0, 1, 2, 3] * 2 and "resumed_parts" not in other.extra
    fresh = cls(**{**kw, "seed": 1}).run(model, ImageSet(x, y), progress=False)
    assert other.extra["mask_l1"] == fresh.extra["mask_l1"]


def test_registry_repr_and_doctests():
    assert isinstance(make_defense("neural_cleanse", steps=7), NeuralCleanse)
    assert isinstance(make_defense("tabor", blocking=0.0), TABOR)
    assert (NeuralCleanse().title, TABOR().title) == ("Neural Cleanse", "TABOR")
    assert repr(NeuralCleanse()).startswith("NeuralCleanse(seed=0, device=None, steps=31000, batch_size=32, lr=0.1, init_cost=0.001")
    assert "blocking=0.1, overlaying=0.01)" in repr(TABOR())
    assert doctest.testmod(nc_module).failed == 0
    assert doctest.testmod(tabor_module).failed == 0


@pytest.mark.parametrize("field,value", [
    ("steps", 0), ("batch_size", 0), ("lr", 0.0), ("init_cost", -1.0), ("cost_multiplier", 1.0),
    ("success_threshold", 0.0), ("success_threshold", 1.5), ("patience", 0), ("detect_images", 0),
    ("epoch_steps", 0), ("early_stop_patience", 0),
    ("anomaly_threshold", 0.0), ("unlearn_fraction", 0.0), ("unlearn_fraction", 1.2), ("unlearn_epochs", 0),
    ("unlearn_lr", -1e-3), ("unlearn_batch_size", 0)])
def test_config_validation(field, value):
    for config in (NeuralCleanseConfig, TABORConfig):
        with pytest.raises(ValueError, match=field) as err:
            config(**{field: value})
        assert "\n" not in str(err.value) and config.__name__ in str(err.value)


@pytest.mark.parametrize("field", ["mask_elastic", "pattern_elastic", "mask_smooth", "pattern_smooth",
                                   "blocking", "overlaying"])
def test_tabor_weight_validation(field):
    with pytest.raises(ValueError, match=f"{field} must be >= 0"):
        TABOR(**{field: -1.0})
    with pytest.raises(TypeError):
        NeuralCleanse(**{field: 0.0})  # not a Neural Cleanse setting


def test_config_types_are_not_interchangeable():
    with pytest.raises(ValueError, match="NeuralCleanseConfig"):
        NeuralCleanse(TABORConfig())
    with pytest.raises(ValueError, match="TABORConfig"):
        TABOR(NeuralCleanseConfig())
    assert NeuralCleanse(NeuralCleanseConfig(steps=5), lr=0.2).config == NeuralCleanseConfig(steps=5, lr=0.2)
