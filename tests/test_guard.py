"""The accuracy guard (``acc_guard``): it holds a slice of the clean set back from unlearning, rolls back a
round that costs more clean accuracy on that slice than allowed, and steps more gently afterwards."""
import copy

import pytest
import torch

from conftest import NO_SIZE_RULES, one_line, tiny_config
from ibau import IBAUConfig, unlearn
from ibau.unlearn.guard import guard_split, scale_step

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_guard_that_never_fires_unlearns_exactly_as_a_run_on_the_images_it_does_not_hold_back(tiny_task):
    model, x, y = tiny_task
    cfg = tiny_config(acc_guard=1.0, guard_fraction=0.25)
    kept, held_back = guard_split(len(x), cfg)
    assert len(held_back) == 15 and len(kept) == 45 and not set(kept.tolist()) & set(held_back.tolist())

    guarded = unlearn(model, (x, y), cfg, progress=False)
    plain = unlearn(model, (x[kept], y[kept]), tiny_config(), progress=False)

    assert not any(h.rolled_back for h in guarded.history)
    assert all(h.guard_acc is not None for h in guarded.history)
    assert all(h.guard_acc is None for h in plain.history)
    assert torch.equal(guarded.delta, plain.delta)
    for k, v in plain.model.state_dict().items():
        assert torch.equal(v, guarded.model.state_dict()[k]), k


def test_scaling_the_step_halves_every_later_step_of_a_cosine():
    def steps(scale_at: int | None) -> list[float]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.Adam([p], lr=1e-2)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        out = []
        for t in range(8):
            if t == scale_at:
                scale_step([opt], [cos], 0.5)
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            cos.step()
        return out

    plain, scaled = steps(None), steps(3)
    assert scaled[:3] == plain[:3]
    assert scaled[3:] == pytest.approx([0.5 * lr for lr in plain[3:]])


def test_a_harmful_round_is_rolled_back_and_the_guard_keeps_clean_accuracy(digits_backdoor):
    """Adam at 0.02 wrecks the digits model in one round. With the guard each such round is undone, the step is
    halved until a round keeps clean accuracy on the held-back slice (40 images: 0.03 allows one more error),
    and that round's model is returned."""
    d = digits_backdoor
    x, y = d["clean"].images, d["clean"].labels
    harsh = dict(rounds=5, batch_size=25, outer_lr=0.02, outer_lr_schedule="constant", seed=1, **NO_SIZE_RULES)
    kept, held_back = guard_split(len(x), IBAUConfig(acc_guard=0.03, seed=1))

    def slice_acc(net) -> float:
        with torch.no_grad():
            return float((net(x[held_back]).argmax(1) == y[held_back]).float().mean())

    before = slice_acc(d["model"])
    # one unguarded round at this step already wrecks the slice: the harm the guard must prevent
    wrecked = unlearn(copy.deepcopy(d["model"]), (x, y), IBAUConfig(**{**harsh, "rounds": 1}), progress=False)
    assert slice_acc(wrecked.model) < before - 0.1

    guarded = unlearn(copy.deepcopy(d["model"]), (x, y), IBAUConfig(**harsh, acc_guard=0.03), progress=False)
    flags = [h.rolled_back for h in guarded.history]
    assert flags[0] and not all(flags), flags  # round 1 is undone; a gentler later round is kept
    assert slice_acc(guarded.model) >= before - 0.03
    for h in guarded.history:
        assert h.rolled_back == (before - h.guard_acc > 0.03)
    # a kept round changed the model: the guard did not just return it untouched
    assert any(not torch.equal(v, d["model"].state_dict()[k]) for k, v in guarded.model.state_dict().items())


@pytest.mark.parametrize("options,words", [
    ({"acc_guard": 2.0}, "acc_guard must be an accuracy drop in [0, 1]"),
    ({"guard_fraction": 1.0}, "guard_fraction must be in (0, 1)"),
    ({"guard_backoff": 0.0}, "guard_backoff must be in (0, 1]"),
    ({"guard_mode": "undo"}, "guard_mode must be one of rollback, select"),
])
def test_impossible_guard_options_are_one_line_errors(options, words):
    with pytest.raises(ValueError) as err:
        IBAUConfig(**options)
    assert words in str(err.value)
    one_line(str(err.value))


def test_a_guard_that_would_leave_nothing_to_unlearn_says_so(tiny_task):
    model, x, y = tiny_task
    with pytest.raises(ValueError) as err:
        unlearn(model, (x[:1], y[:1]), tiny_config(acc_guard=0.02), progress=False)
    assert "leaves none to unlearn with" in str(err.value)


@pytest.mark.parametrize("extra,words", [
    ({"rounds": [{}] * 5, "selected_round": 5, "suspect": None}, ""),
    ({"rounds": [{}] * 5, "selected_round": 3, "suspect": None}, "round 3 of 5 kept by the accuracy guard"),
    ({"rounds": [{}] * 5, "selected_round": 2, "suspect": 7}, "round 2 of 5 kept by the round probe (suspect class 7)"),
    ({"rounds": [{}] * 5, "selected_round": 0, "suspect": None}, "the model as handed over"),
    ({"rounds": [{}] * 5, "selected_round": 4, "suspect": 7, "closest_fallback": True},
     "no round kept clean accuracy within the accuracy guard: round 4 of 5, the closest"),
])
def test_the_defend_log_says_which_round_was_kept_and_why(extra, words):
    from ibau.defenses.base import DefenseResult
    from ibau.pipeline.defend import _kept_round
    said = _kept_round(DefenseResult(model=torch.nn.Identity(), extra=extra))
    assert (words in said) if words else said == ""
