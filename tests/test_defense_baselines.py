"""Baseline defenses of SPEC §3: Fine-Pruning, NAD and the naive UAP adversarial training (I-BAU §4).

The runs are sized for a shared 2-core CPU: few epochs, subsets of the 400 clean digits. Numbers are
printed (run with ``-s``) for the record.
"""
import copy

import pytest
import torch
from torch import nn

from conftest import held_metrics, same_state, snapshot
from ibau.defenses import defense_class, make_defense
from ibau.defenses.fine_pruning import FinePruning, FinePruningConfig, conv_sites
from ibau.defenses.nad import NAD, NADConfig, at_loss, attention_map, default_layers
from ibau.defenses.uap_at import UAPAdversarialTraining, UAPATConfig, deepfool, universal_perturbation
from ibau.metrics import accuracy
from ibau.models import ModelCard, load_model, save_model


def report(name: str, d, after: dict[str, float]) -> None:
    b = d["before"]
    print(f"\n[{name}] before ACC {b['acc']:.3f} ASR {b['asr']:.3f} -> after ACC {after['acc']:.3f} ASR {after['asr']:.3f}")


class Wrapped(nn.Module):
    """A non-Sequential container, to exercise the generic (hook) path of the pruning search."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def channel_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    modules, out = dict(model.named_modules()), {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o.detach().clone()))
               for n in names]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return out


# --- registry and configs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, cls", [("fine_pruning", FinePruning), ("nad", NAD), ("uap_at", UAPAdversarialTraining)])
def test_registered_by_name(name, cls):
    assert defense_class(name) is cls
    assert make_defense(name).name == name


@pytest.mark.parametrize("cls, kwargs, word", [
    (FinePruningConfig, {"prune_size": 0}, "prune_size"),
    (FinePruningConfig, {"prune_size": 1.5}, "prune_size"),
    (FinePruningConfig, {"step": 0}, "step"),
    (FinePruningConfig, {"step": True}, "step"),
    (FinePruningConfig, {"max_acc_drop": -0.1}, "max_acc_drop"),
    (FinePruningConfig, {"acc_floor": 1.5}, "acc_floor"),
    (FinePruningConfig, {"lr": 0}, "lr"),
    (NADConfig, {"student_epochs": 0}, "student_epochs"),
    (NADConfig, {"betas": ()}, "betas"),
    (NADConfig, {"betas": (1.0, -1.0)}, "betas"),
    (NADConfig, {"layers": ("a", "b")}, "betas"),
    (NADConfig, {"optimizer": "rmsprop"}, "optimizer"),
    (NADConfig, {"distance": "cosine"}, "distance"),
    (NADConfig, {"p": 0}, "p must"),
    (UAPATConfig, {"norm_bound": 0}, "norm_bound"),
    (UAPATConfig, {"target_fooling_rate": 1.5}, "target_fooling_rate"),
    (UAPATConfig, {"rounds": 0}, "rounds"),
    (UAPATConfig, {"uap_samples": 0}, "uap_samples"),
    (UAPATConfig, {"perturb_fraction": 0}, "perturb_fraction"),
    (UAPATConfig, {"num_candidates": 1}, "num_candidates"),
])
def test_config_validation_names_the_problem(cls, kwargs, word):
    with pytest.raises(ValueError, match=word) as info:
        cls(**kwargs)
    assert "\n" not in str(info.value)


def test_configs_are_frozen_with_seed_and_device():
    for cls in (FinePruningConfig, NADConfig, UAPATConfig):
        cfg = cls()
        assert cfg.seed == 0 and cfg.device is None
        with pytest.raises(AttributeError):
            cfg.seed = 1
    assert NADConfig(betas=[1, 2]).betas == (1.0, 2.0)  # lists are stored as hashable tuples
    cli = NADConfig(betas="0,0,5000", layers="6,14,22", lr_decay_epochs=2)  # as --defense-option gives them
    assert (cli.betas, cli.layers, cli.lr_decay_epochs) == ((0.0, 0.0, 5000.0), ("6", "14", "22"), (2,))
    with pytest.raises(ValueError, match="betas must be numbers"):
        NADConfig(betas="high")


# --- Fine-Pruning -----------------------------------------------------------------------------------------
def test_conv_sites_follow_bn_and_activation(digits_backdoor):
    model = digits_backdoor["model"]
    sites = conv_sites(model, digits_backdoor["clean"].images[:2])
    assert len(sites) == 6
    last = sites[-1]
    assert (last.conv_name, last.bn_name, last.feature_name) == ("20", "21", "22")  # conv, BN, ELU
    assert last.shape == (128, 8, 8)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    (site,) = conv_sites(plain, torch.zeros(1, 3, 32, 32))
    assert site.bn is None and site.feature_name == "0"


def test_fine_pruning_search_prunes_least_active_channels_down_to_the_floor(digits_backdoor):
    d = digits_backdoor
    model, clean = d["model"], d["clean"]
    state = snapshot(model)
    result = FinePruning(prune_size=200, step=4, epochs=0, device="cpu").run(model, clean, progress=False)
    extra = result.extra
    pruned = extra["pruned_channels"]
    assert same_state(model, state)
    assert 0 < len(pruned) < 128 and len(pruned) % 4 == 0
    assert (extra["layer"], extra["measured_at"], extra["channels"]) == ("20", "22", 128)
    assert extra["acc_floor"] == pytest.approx(extra["acc_unpruned"] - 0.05)
    assert [h["step"] for h in result.history] == ["pruned"]

    # Independent check on the same split (seeded draw of 200 images).
    order = torch.randperm(len(clean), generator=torch.Generator().manual_seed(0))
    prune_set = clean.subset(order[:200])
    act = channel_outputs(model, ["22"], prune_set.images)["22"].transpose(0, 1).flatten(1).mean(1)
    ranking = torch.argsort(act).tolist()
    assert sorted(pruned) == sorted(ranking[:len(pruned)])
    acc = accuracy(result.model, prune_set.images, prune_set.labels)
    assert acc == pytest.approx(extra["acc_pruned"]) and acc >= extra["acc_floor"]
    assert accuracy(model, prune_set.images, prune_set.labels) == pytest.approx(extra["acc_unpruned"])
    # One more step (4 more channels, zeroed in the weights) falls below the floor.
    further = copy.deepcopy(result.model)
    with torch.no_grad():
        for name in ("20.weight", "20.bias", "21.weight", "21.bias"):
            further.state_dict()[name][ranking[len(pruned):len(pruned) + 4]] = 0
    assert accuracy(further, prune_set.images, prune_set.labels) < extra["acc_floor"]

    # The generic hook path (any container) makes the same choice as the Sequential fast path.
    wrapped = FinePruning(prune_size=200, step=4, epochs=0, device="cpu").run(Wrapped(model), clean, progress=False)
    assert wrapped.extra["pruned_channels"] == pruned
    assert (wrapped.extra["layer"], wrapped.extra["measured_at"]) == ("net.20", "net.22")
    print(f"\n[fine_pruning search] pruned {len(pruned)}/128 channels; prune-set ACC "
          f"{extra['acc_unpruned']:.3f} -> {extra['acc_pruned']:.3f} (floor {extra['acc_floor']:.3f}); "
          f"held-out {held_metrics(d, result.model)}")


def test_fine_pruning_keeps_channels_zero_through_fine_tuning_and_saves(digits_backdoor, tmp_path):
    d = digits_backdoor
    model, clean = d["model"], d["clean"]
    state = snapshot(model)
    result = FinePruning(prune_size=200, step=4, epochs=2, device="cpu").run(model, clean, progress=False)
    pruned = result.extra["pruned_channels"]
    assert pruned
    assert same_state(model, state)
    assert [h["step"] for h in result.history] == ["pruned", "epoch 1", "epoch 2"]
    assert list(result.model.state_dict()) == list(model.state_dict())  # pruning made permanent, no *_orig/_mask
    assert not result.model._forward_pre_hooks and not result.model[20]._forward_pre_hooks
    assert not torch.equal(result.model.state_dict()["26.weight"], state["26.weight"])  # fine-tuned

    outs = channel_outputs(result.model, ["20", "21", "22"], d["held"].images[:64])
    for name in ("20", "21", "22"):
        assert outs[name][:, pruned].abs().max() == 0, name
    kept = [i for i in range(128) if i not in set(pruned)]
    assert outs["22"][:, kept].abs().amax(dim=(0, 2, 3)).gt(0).all()

    after = held_metrics(d, result.model)
    report("fine_pruning", d, after)
    assert after["acc"] >= d["before"]["acc"] - 0.05

    card = ModelCard("small_vgg", 10, [3, 32, 32], {"mean": [0.5] * 3, "std": [0.25] * 3})
    loaded, _ = load_model(save_model(result.model, tmp_path / "fp.safetensors", card))
    x = d["held"].images[:32]
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-5)


def test_fine_pruning_needs_images_left_to_fine_tune(digits_backdoor):
    with pytest.raises(ValueError, match="prune_size"):
        FinePruning(device="cpu").run(digits_backdoor["model"], digits_backdoor["clean"], progress=False)


# --- NAD --------------------------------------------------------------------------------------------------
def test_attention_map_and_at_loss():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 5, 4, 4, generator=g)
    am = attention_map(a, p=2)
    assert am.shape == (2, 16)
    assert torch.allclose(am.norm(dim=1), torch.ones(2), atol=1e-5)
    expected = a.pow(2).sum(1).flatten(1)
    assert torch.allclose(am, expected / expected.norm(dim=1, keepdim=True), atol=1e-5)
    assert at_loss(a, a).item() == 0
    b = torch.randn(2, 7, 4, 4, generator=g)  # teacher and student may differ in channels
    diff = attention_map(a) - attention_map(b)
    assert at_loss(a, b, distance="mse").item() == pytest.approx(diff.pow(2).mean().item())
    assert at_loss(a, b, distance="l2").item() == pytest.approx(diff.norm(dim=1).mean().item())


def test_nad_default_layers_are_the_block_outputs(digits_backdoor):
    x = digits_backdoor["clean"].images[:2]
    assert default_layers(digits_backdoor["model"], x, 3) == ["6", "14", "22"]  # ELU ending each block
    assert default_layers(digits_backdoor["model"], x, 1) == ["22"]


def test_nad_reduces_held_out_asr(digits_backdoor):
    d = digits_backdoor
    model = d["model"]
    state = snapshot(model)
    result = NAD(teacher_epochs=1, student_epochs=2, device="cpu").run(model, d["clean"], progress=False)
    assert same_state(model, state)
    assert not same_state(result.model, state)
    assert [h["step"] for h in result.history] == ["teacher epoch 1", "epoch 1", "epoch 2"]
    assert result.extra["layers"] == ["6", "14", "22"]
    assert len(result.extra["student_losses"]) == 2 and result.extra["student_losses"][0]["at"] > 0
    assert list(result.model.state_dict()) == list(state)
    assert not any(m._forward_hooks for m in result.model.modules())  # distillation hooks removed
    after = held_metrics(d, result.model)
    report("nad", d, after)
    assert after["asr"] < d["before"]["asr"] - 0.3
    assert after["acc"] >= d["before"]["acc"] - 0.05
    # Control: the same student training without the attention term (β = 0) keeps the backdoor here.
    control = NAD(teacher_epochs=0, student_epochs=2, betas=(0, 0, 0), device="cpu").run(model, d["clean"], progress=False)
    control_metrics = held_metrics(d, control.model)
    print(f"[nad control, betas 0] ACC {control_metrics['acc']:.3f} ASR {control_metrics['asr']:.3f}")
    assert control_metrics["asr"] > after["asr"] + 0.3


def test_nad_rejects_unknown_layer(digits_backdoor):
    with pytest.raises(ValueError, match="no module named"):
        NAD(teacher_epochs=0, student_epochs=1, betas=(1.0,), layers=("nope",), device="cpu").run(
            digits_backdoor["model"], digits_backdoor["clean"].subset(slice(0, 8)), progress=False)


def test_a_nad_run_stopped_in_its_student_phase_resumes_from_the_kept_teacher(digits_backdoor, tmp_path, monkeypatch):
    """With a resume folder the teacher phase is kept whole: a run stopped in the student phase and started again
    fine-tunes no teacher, and gives the uninterrupted run's model, losses and history (the dropout RNG restored);
    a teacher kept by other settings is trained again."""
    d = digits_backdoor
    clean = d["clean"].subset(slice(0, 300))
    kw = dict(teacher_epochs=2, student_epochs=2, device="cpu")
    whole = NAD(**kw).run(d["model"], clean, progress=False)

    def stop_at_student(model, seconds):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        NAD(**kw).run(d["model"], clean, callback=stop_at_student, progress=False, resume_dir=tmp_path)
    assert [f.name for f in tmp_path.iterdir()] == ["teacher.pt"]
    phases: list[bool] = []
    real = NAD._train
    monkeypatch.setattr(NAD, "_train", lambda self, model, teacher, *a: phases.append(teacher is None) or
                        real(self, model, teacher, *a))
    resumed = NAD(**kw).run(d["model"], clean, progress=False, resume_dir=tmp_path)
    assert phases == [False] and resumed.extra["resumed_parts"] == 1  # the student phase only
    assert same_state(resumed.model, whole.model)
    assert resumed.extra["teacher_losses"] == whole.extra["teacher_losses"]
    assert resumed.extra["student_losses"] == whole.extra["student_losses"]
    assert [h["step"] for h in resumed.history] == [h["step"] for h in whole.history]
    other = NAD(**{**kw, "seed": 1}).run(d["model"], clean, progress=False, resume_dir=tmp_path)
    assert phases == [False, True, False] and "resumed_parts" not in other.extra


# --- UAP adversarial training -----------------------------------------------------------------------------
def test_deepfool_flips_the_prediction(digits_backdoor):
    model = copy.deepcopy(digits_backdoor["model"]).eval()
    x = digits_backdoor["clean"].images[0]
    with torch.no_grad():
        label = int(model(x[None]).argmax())
    r, fooled = deepfool(model, x, label)
    assert fooled
    with torch.no_grad():
        assert int(model((x + r)[None]).argmax()) != label
    assert 0 < r.norm() < 10


def test_universal_perturbation_respects_the_bound(digits_backdoor):
    model = copy.deepcopy(digits_backdoor["model"]).eval()
    images = digits_backdoor["clean"].images[:6]
    cfg = UAPATConfig(norm_bound=0.5, max_passes=2, target_fooling_rate=1.0, deepfool_steps=4)
    delta, rates = universal_perturbation(model, images, cfg, torch.Generator().manual_seed(0))
    assert delta.shape == images.shape[1:]
    assert delta.norm() == pytest.approx(0.5, abs=1e-4)  # the projection was active
    assert len(rates) == 2 and all(0 <= r <= 1 for r in rates)
    with torch.no_grad():
        clean_pred, adv_pred = model(images).argmax(1), model((images + delta).clamp(0, 1)).argmax(1)
    assert rates[-1] == pytest.approx(float((clean_pred != adv_pred).float().mean()))


def test_uap_at_runs_rounds_and_returns_bounded_delta(digits_backdoor):
    d = digits_backdoor
    model = d["model"]
    state = snapshot(model)
    cfg = UAPATConfig(rounds=2, uap_samples=20, max_passes=1, device="cpu")
    result = UAPAdversarialTraining(cfg).run(model, d["clean"].subset(slice(0, 200)), progress=False)
    assert same_state(model, state)
    assert not same_state(result.model, state)
    assert [h["step"] for h in result.history] == ["round 1", "round 2"]
    delta = result.triggers[-1]["delta"]
    assert delta.shape == (3, 32, 32) and delta.device.type == "cpu"
    assert 0 < float(delta.norm()) <= cfg.norm_bound + 1e-4
    rates = result.extra["fooling_rates"]
    assert len(rates) == 2 and all(0 <= r <= 1 for r in rates)
    assert [r["passes"][-1] for r in result.extra["rounds"]] == rates
    assert result.extra["rounds"][-1]["delta_norm"] == pytest.approx(float(delta.norm()), rel=1e-5)
    after = held_metrics(d, result.model)
    report("uap_at", d, after)
    print(f"[uap_at] fooling rates per round {rates}, ‖δ‖ per round "
          f"{[round(r['delta_norm'], 2) for r in result.extra['rounds']]}")
