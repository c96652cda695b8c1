"""DeepInspect (generator trigger synthesis + MAD + patching) and DP-SGD training from scratch (SPEC §3)."""
import copy
import math
import warnings

import pytest
import torch
from torch import nn

from conftest import held_metrics, held_monitor, same_state, snapshot
from ibau.data import ImageSet
from ibau.defenses import make_defense
from ibau.defenses.deepinspect import DeepInspect, DeepInspectConfig
from ibau.defenses.dp import DPSGD, DPConfig, dp_architecture, make_private

pytestmark = pytest.mark.usefixtures("one_thread")


# --- DeepInspect ----------------------------------------------------------------------------------------
def test_deepinspect_flags_the_target_and_patching_removes_the_backdoor(digits_backdoor):
    d = digits_backdoor
    before = d["before"]
    original = snapshot(d["model"])
    # Small settings for the CPU: 300 generator steps of 32 images (the defaults: 1000 of 64) at a higher
    # learning rate; default trigger penalty. Seeds 0-2 gave class 8 an anomaly index of 3.3-4.9.
    defense = DeepInspect(steps=300, batch_size=32, gen_lr=3e-3, patch_epochs=2, device="cpu")
    monitor = held_monitor(d)
    result = defense.run(d["model"], d["clean"], callback=monitor, progress=False)

    assert result.flagged == [8], (result.anomaly, result.extra["magnitudes"])
    assert result.anomaly[8] > 2
    magnitudes = result.extra["magnitudes"]
    assert min(magnitudes, key=magnitudes.get) == 8
    assert set(result.triggers) == set(range(10))
    assert all(t["delta"].shape == (3, 32, 32) for t in result.triggers.values())
    assert result.triggers[8]["delta"].abs().max() <= 1
    assert result.extra["trigger_success"][8] > 0.9  # the generated triggers do reach the target class

    after = held_metrics(d, result.model)
    assert before["asr"] > 0.9
    assert after["asr"] < 0.2, after
    assert after["asr"] < before["asr"] - 0.5
    assert after["acc"] > before["acc"] - 0.10, after

    assert [h["step"] for h in result.history] == ["detection", "patch epoch 1", "patch epoch 2"]
    assert result.history[0]["asr"] == pytest.approx(before["asr"])  # detection leaves the model as it was
    assert result.history[-1]["asr"] == pytest.approx(after["asr"])
    assert result.extra["patched"] is True
    assert same_state(original, d["model"])  # the caller's model is untouched


def test_deepinspect_without_a_flag_does_not_patch(digits_backdoor):
    d = digits_backdoor
    result = DeepInspect(steps=3, batch_size=8, num_samples=4, threshold=1e9, device="cpu").run(
        d["model"], d["clean"], progress=False)
    assert result.flagged == []
    assert result.extra["patched"] is False
    assert [h["step"] for h in result.history] == ["detection"]
    assert same_state(d["model"], result.model)
    assert set(result.anomaly) == set(range(10)) and all(math.isfinite(v) for v in result.anomaly.values())


@pytest.mark.parametrize("bad, match", [
    ({"steps": 0}, "steps must be >= 1"),
    ({"batch_size": 0}, "batch_size must be >= 1"),
    ({"gen_lr": 0.0}, "gen_lr must be > 0"),
    ({"threshold": -1.0}, "threshold must be > 0"),
    ({"pert_weight": -1.0}, "pert_weight must be >= 0"),
    ({"patch_fraction": 1.5}, r"patch_fraction must be in \(0, 1\]"),
    ({"patch_epochs": -1}, "patch_epochs must be >= 0"),
])
def test_deepinspect_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        DeepInspectConfig(**bad)
    with pytest.raises(ValueError, match=match):
        DeepInspect(**bad)


# --- DP-SGD ---------------------------------------------------------------------------------------------
def _train_subset(d, n=256):
    train = d["train"]
    return train.subset(torch.arange(n))


def test_dp_trains_a_fresh_groupnorm_model_on_the_training_set_with_dp_sgd(digits_backdoor):
    from opacus.accountants import RDPAccountant

    d = digits_backdoor
    train = _train_subset(d)
    poisoned_in_subset = int((torch.as_tensor(d["poisoned_indices"]) < len(train)).sum())
    assert poisoned_in_subset > 0  # the subset really is poisoned
    original = snapshot(d["model"])
    defense = DPSGD(train=train, epochs=2, batch_size=64, device="cpu")
    assert defense.needs_training_data is True
    calls = []
    result = defense.run(d["model"], d["clean"], callback=lambda m, s: calls.append(s) or {"n": len(calls)},
                         progress=False)

    extra = result.extra
    # what Opacus' optimizer and accountant actually used
    assert extra["noise_multiplier"] == 1.5 and extra["max_grad_norm"] == 1.0
    assert extra["train_size"] == len(train)
    assert extra["sample_rate"] == pytest.approx(64 / len(train))
    assert extra["steps"] == 2 * math.ceil(len(train) / 64)
    assert math.isfinite(extra["epsilon"]) and extra["epsilon"] > 0
    reference = RDPAccountant()
    reference.history = [(1.5, 64 / len(train), extra["steps"])]
    assert extra["epsilon"] == pytest.approx(reference.get_epsilon(1e-5))

    model = result.model
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 6
    assert set(model.state_dict()) != set(original)  # a different architecture: no BN running statistics
    assert not model.training
    assert model(d["clean"].images[:5]).shape == (5, 10)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    poisoned_conv = next(m for m in d["model"].modules() if isinstance(m, nn.Conv2d))
    assert not torch.equal(first_conv.weight, poisoned_conv.weight)  # re-initialised, trained from scratch
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # a plain module, no Opacus state

    assert [h["step"] for h in result.history] == ["epoch 1", "epoch 2"]
    assert [h["n"] for h in result.history] == [1, 2]
    assert same_state(original, d["model"])  # the caller's model is untouched (still with BatchNorm)


def test_dp_without_noise_reports_infinite_epsilon(digits_backdoor):
    d = digits_backdoor
    result = DPSGD(train=_train_subset(d, 64), epochs=1, batch_size=32, noise_multiplier=0.0, device="cpu").run(
        d["model"], d["clean"], progress=False)
    assert result.extra["epsilon"] == math.inf and result.extra["noise_multiplier"] == 0.0
    assert result.extra["accountant_warnings"] == []


def _privatised_grad_norm(d, config, x_n=64):
    torch.manual_seed(0)
    net = dp_architecture(d["model"])
    unwrapped = copy.deepcopy(net)
    train = _train_subset(d, x_n)
    private, optimizer, loader, _ = make_private(net, train, config, torch.device("cpu"))
    x, y = next(iter(loader))
    loss = nn.functional.cross_entropy(private(x), y)
    optimizer.zero_grad()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward()
    optimizer.step()  # clips per example, adds noise, scales by the expected batch size: p.grad is that
    grads = torch.cat([p.grad.flatten() for p in net.parameters()])
    plain = torch.autograd.grad(nn.functional.cross_entropy(unwrapped(x), y), list(unwrapped.parameters()))
    return float(grads.norm()), float(torch.cat([g.flatten() for g in plain]).norm()), len(y), grads.numel()


def test_dp_gradients_are_clipped_per_example_and_noised(digits_backdoor):
    d = digits_backdoor
    bound, B = 1e-3, 32
    # no noise: the update is the mean of per-example gradients clipped to `bound`
    norm, plain, n, _ = _privatised_grad_norm(d, DPConfig(noise_multiplier=0.0, max_grad_norm=bound, batch_size=B))
    assert norm <= bound * n / B * 1.0001
    assert plain > 20 * bound  # so the bound really did cut the gradient
    # with noise: Gaussian noise of std sigma * bound / B on every coordinate dominates
    sigma = 5.0
    norm, _, n, params = _privatised_grad_norm(d, DPConfig(noise_multiplier=sigma, max_grad_norm=bound, batch_size=B))
    expected = sigma * bound / B * math.sqrt(params)
    assert expected * 0.95 < norm < expected * 1.05 + bound * n / B


def test_dp_without_training_data_is_a_clear_error(digits_backdoor):
    d = digits_backdoor
    with pytest.raises(ValueError, match=r"dp trains from scratch on the poisoned training set: pass train="):
        DPSGD(epochs=1).run(d["model"], d["clean"], progress=False)
    with pytest.raises(ValueError, match="must be an ImageSet"):
        DPSGD(train=d["train"].images)
    small = ImageSet(torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="one image size"):
        DPSGD(train=small, epochs=1, device="cpu").run(d["model"], d["clean"], progress=False)
    defense = make_defense("dp", epochs=1, train=d["train"])  # the registry passes the training set through
    assert isinstance(defense, DPSGD) and defense.train_data is d["train"]


@pytest.mark.parametrize("bad, match", [
    ({"noise_multiplier": -1.0}, "noise_multiplier must be >= 0"),
    ({"max_grad_norm": 0.0}, "max_grad_norm must be > 0"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"lr": 0.0}, "lr must be > 0"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"delta": 0.0}, r"delta must be in \(0, 1\)"),
    ({"accountant": "moments"}, "accountant must be one of rdp, prv, gdp"),
])
def test_dp_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        DPConfig(**bad)
    with pytest.raises(ValueError, match=match):
        DPSGD(**bad)
