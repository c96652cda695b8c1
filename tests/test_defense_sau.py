"""SAU (Wei et al., NeurIPS 2023): per-image shared adversarial examples (the purified and the backdoored model
agree on a wrong label) and the three-term loss that unlearns them.

The loss and the definitions are checked by hand on small tensors; the mechanism (SAU lowers the number of
shared adversarial examples, and the backdoor with them, where the same training without the shared term does
not) on the session's digits model with a subset of its clean images (the default 100 rounds take ~30 min there)."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import held_metrics, one_line, same_state, snapshot, tiny_net
from ibau.data import ImageSet
from ibau.defenses import defense_class, make_defense
from ibau.defenses.sau import SAU, SAUConfig, count_shared, shared_loss, shared_mask, shared_pgd

pytestmark = pytest.mark.usefixtures("one_thread")


def test_shared_examples_are_those_both_models_get_wrong_with_the_same_label():
    y = torch.tensor([0, 0, 0, 0, 1])
    pred = torch.tensor([2, 2, 0, 3, 1])
    ref = torch.tensor([2, 1, 0, 0, 1])
    # 0: both wrong, same label: shared; 1: both wrong, different labels; 2: both right; 3: only θ wrong; 4: right
    assert shared_mask(pred, ref, y).tolist() == [True, False, False, False, False]


def test_the_shared_loss_is_minus_log_one_minus_p_of_the_backdoored_label_on_the_examples_that_fool_it():
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]])
    ref_label = torch.tensor([2, 1, 0])
    fooled = torch.tensor([True, False, True])
    p = logits.softmax(1)
    expected = -(math.log(1 - float(p[0, 2])) + math.log(1 - float(p[2, 0]))) / 3  # divided by the batch size
    assert float(shared_loss(logits, ref_label, fooled)) == pytest.approx(expected, rel=1e-5)
    assert float(shared_loss(logits, ref_label, torch.zeros(3, dtype=torch.bool))) == 0.0
    # its gradient lowers θ's probability of the backdoored model's label, and only on those examples
    z = logits.clone().requires_grad_(True)
    shared_loss(z, ref_label, fooled).backward()
    assert z.grad[0, 2] > 0 and z.grad[2, 0] > 0 and torch.all(z.grad[1] == 0)


def test_shared_pgd_stays_in_the_ball_and_starts_at_the_max_corner(tiny_task):
    model, x, y = tiny_task
    ref = tiny_net(4).eval()
    for norm, check in (("linf", lambda d: d.abs().amax() <= 0.2 + 1e-6),
                        ("l2", lambda d: (d.flatten(1).norm(dim=1) <= 0.2 + 1e-5).all())):
        delta = shared_pgd(model, ref, x, y, SAUConfig(norm=norm))
        assert delta.shape == x.shape and bool(check(delta)) and not delta.requires_grad
    one_step = shared_pgd(model, ref, x, y, SAUConfig(pgd_steps=1, pgd_lr=1e-9))
    assert torch.allclose(one_step, torch.full_like(x, 0.2), atol=1e-6)  # "max": +bound everywhere, then projected
    assert all(not p.requires_grad or p.grad is None for p in list(model.parameters()) + list(ref.parameters()))


def test_sau_lowers_the_shared_adversarial_examples_and_the_backdoor(digits_backdoor):
    d = digits_backdoor
    model, state = d["model"], snapshot(d["model"])
    clean = d["clean"].subset(slice(0, 96))
    probe_x, probe_y = d["held"].images[:64], d["held"].labels[:64]
    cfg = SAUConfig()
    # before: θ = θ_bd, so every adversarial example that fools it is shared
    before = count_shared(model, model, probe_x, probe_y, cfg)
    result = SAU(rounds=2, batch_size=48, device="cpu").run(model, clean, progress=False)
    assert same_state(model, state)
    assert [h["step"] for h in result.history] == ["round 1", "round 2"]
    rounds = result.extra["per_round"]
    assert rounds[1]["shared"] < rounds[0]["shared"] and rounds[1]["shared_loss"] < rounds[0]["shared_loss"]
    # on this one-target backdoor the perturbations that fool θ_bd find its target (measured: 83% of them in
    # round 1, 46% in round 2 as the shared term unlearns it; a tenth if they scattered over the classes)
    assert [r["top_label"] for r in rounds] == [d["trigger"].target] * 2 and rounds[0]["top_label_share"] > 0.5
    after = count_shared(result.model, model, probe_x, probe_y, cfg)
    # control: the same two rounds without the shared term (λ3 = 0: Adam on the clean loss, same PGD draws)
    control = SAU(rounds=2, batch_size=48, lmd3=0.0, device="cpu").run(model, clean, progress=False)
    after_control = count_shared(control.model, model, probe_x, probe_y, cfg)
    m, mc = held_metrics(d, result.model), held_metrics(d, control.model)
    print(f"\n[sau] shared adversarial examples on 64 held-out images: {before} -> {after} (λ3 = 0: {after_control}); "
          f"ASR {d['before']['asr']:.3f} -> {m['asr']:.3f} (λ3 = 0: {mc['asr']:.3f}), ACC {d['before']['acc']:.3f} -> {m['acc']:.3f}")
    assert before >= 0.9 * len(probe_y)
    assert after < before / 2 and after < after_control
    assert m["asr"] < mc["asr"] - 0.05 and m["asr"] < d["before"]["asr"] - 0.05
    assert m["acc"] >= d["before"]["acc"] - 0.05


def test_sau_cpu_preset_and_registry():
    assert defense_class("sau") is SAU and make_defense("sau").name == "sau"
    assert SAU.preset_names() == ["default", "cpu"]
    cpu = SAU.from_options({"batch_size": 64}, preset="cpu", seed=2).config
    assert (cpu.rounds, cpu.batch_size, cpu.seed, cpu.lmd1, cpu.lmd3) == (5, 64, 2, 1.0, 1.0)
    assert SAU.from_options({"rounds": 7}, preset="cpu").config.rounds == 7
    d = SAUConfig()
    assert (d.rounds, d.bound, d.pgd_steps, d.pgd_lr, d.beta1, d.beta2, d.lmd1, d.lmd2, d.lmd3, d.lr) == \
        (100, 0.2, 5, 0.2, 0.01, 1.0, 1.0, 0.0, 1.0, 1e-4)


def test_sau_train_mode_and_reproducibility(tiny_task):
    model, x, y = tiny_task
    runs = [SAU(rounds=1, batch_size=20, train_mode=True, seed=3, device="cpu").run(model, ImageSet(x, y), progress=False)
            for _ in range(2)]
    assert same_state(runs[0].model, runs[1].model)
    assert not torch.equal(runs[0].model[1].running_mean, model[1].running_mean)  # train mode moved the BN statistics
    frozen = SAU(rounds=1, batch_size=20, device="cpu").run(model, ImageSet(x, y), progress=False)
    assert torch.equal(frozen.model[1].running_mean, model[1].running_mean)  # eval mode (default) did not
    with torch.no_grad():
        assert F.cross_entropy(frozen.model(x), y) < F.cross_entropy(model(x), y) + 0.5


@pytest.mark.parametrize("kwargs, word", [
    ({"rounds": 0}, "rounds must be >= 1"), ({"batch_size": 0}, "batch_size"), ({"lr": 0}, "lr must be > 0"),
    ({"norm": "l1"}, "norm must be one of linf, l2"), ({"bound": 0}, "bound must be > 0"), ({"pgd_steps": 0}, "pgd_steps"),
    ({"pgd_lr": -1}, "pgd_lr"), ({"pgd_init": "ones"}, "pgd_init must be one of"), ({"beta1": -1}, "beta1"),
    ({"beta2": -1}, "beta2"), ({"lmd1": -1}, "lmd1"), ({"lmd2": -1}, "lmd2"), ({"lmd3": -0.5}, "lmd3"),
    ({"train_mode": "no"}, "train_mode must be true or false"),
])
def test_config_validation_names_the_problem_and_the_fix(kwargs, word):
    with pytest.raises(ValueError, match=f"^SAUConfig: {word}") as info:
        SAUConfig(**kwargs)
    one_line(str(info.value))
