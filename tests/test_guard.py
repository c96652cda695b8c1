"""The accuracy guard (``acc_guard``): it holds a slice of the clean set back from unlearning, rolls back a
round that costs more clean accuracy on that slice than allowed, and steps more gently afterwards."""
import copy

import pytest
import torch

from conftest import NO_SIZE_RULES, held_metrics, learnt_task, one_line
from ibau import IBAUConfig, unlearn
from ibau.unlearn.guard import guard_split, scale_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**options) -> IBAUConfig:
    # the size rules off: these tests need a step large enough to harm the model on a few dozen images
    return IBAUConfig(rounds=3, batch_size=20, patch_threshold=0, min_steps=0, **{**NO_SIZE_RULES, **options})


def test_a_guard_that_never_fires_unlearns_exactly_as_a_run_on_the_images_it_does_not_hold_back(tiny_task):
    model, x, y = tiny_task
    cfg = _tiny(acc_guard=1.0, guard_fraction=0.25)
    kept, held_back = guard_split(len(x), cfg)
    assert len(held_back) == 15 and len(kept) == 45 and not set(kept.tolist()) & set(held_back.tolist())

    guarded = unlearn(model, (x, y), cfg, progress=False)
    plain = unlearn(model, (x[kept], y[kept]), _tiny(), progress=False)

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
    wrecked = unlearn(copy.deepcopy(d["model"]), (x, y), IBAUConfig(**harsh), progress=False)
    assert slice_acc(wrecked.model) < before - 0.1  # the harm the guard must prevent

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
        unlearn(model, (x[:1], y[:1]), _tiny(acc_guard=0.02), progress=False)
    assert "leaves none to unlearn with" in str(err.value)


def test_a_selecting_guard_changes_no_round_and_returns_the_latest_round_within_the_allowed_drop():
    """``guard_mode="select"`` never undoes a round: whatever ``acc_guard``, the rounds are those of a run on the
    images it does not hold back. It only chooses the model returned: the latest round whose accuracy on the
    held-back slice is within ``acc_guard`` of the start, with that round's weights and δ, or the model as
    handed over (round 0) when none is."""
    model, x, y = learnt_task()
    cfg = _tiny(outer_lr=0.1, outer_lr_schedule="constant", guard_fraction=0.25, guard_mode="select").replace(rounds=5)
    kept, held_back = guard_split(len(x), cfg.replace(acc_guard=1.0))
    plain = unlearn(model, (x[kept], y[kept]), cfg, progress=False)
    with torch.no_grad():
        before = float((model(x[held_back]).argmax(1) == y[held_back]).float().mean())

    def run(allowed: float):
        weights: list[dict] = []
        res = unlearn(model, (x, y), cfg.replace(acc_guard=allowed), progress=False,
                      callback=lambda r, net, delta: weights.append(copy.deepcopy(net.state_dict())))
        return res, weights

    drops = [before - h.guard_acc for h in run(1.0)[0].history]
    thresholds = sorted({drop for drop in drops if drop >= 0} | {max(0.0, min(drops) - 0.01)})
    assert len(thresholds) > 2 and min(drops) > 0.01, drops  # rounds lose different amounts: the thresholds select
    kept_rounds = set()
    for allowed in thresholds:
        res, weights = run(allowed)
        assert not any(h.rolled_back for h in res.history)
        for mine, theirs in zip(res.history, plain.history):
            assert torch.equal(mine.delta, theirs.delta)
        good = [r + 1 for r, drop in enumerate(drops) if drop <= allowed]
        assert res.selected_round == (max(good) if good else 0), (allowed, drops)
        kept_rounds.add(res.selected_round)
        chosen = weights[res.selected_round - 1] if good else model.state_dict()
        for k, v in chosen.items():
            assert torch.equal(v, res.model.state_dict()[k]), k
        assert torch.equal(res.delta, res.history[res.selected_round - 1].delta if good else torch.zeros_like(res.delta))
    assert 0 in kept_rounds and len(kept_rounds - {0, 5}) > 0, kept_rounds  # none, and a round before the last


def test_a_harmful_first_round_does_not_stop_a_selecting_guard(digits_backdoor):
    """A harsh constant step at which round 1 costs far more than allowed on the held-back slice and a later round
    wins it back: a selecting guard returns the latest such round, where a rollback would have undone round 1 and
    halved every later step. Which step does that is a matter of one or two images of 40, and it moves with the
    CPU's kernels (0.003 on the previous machine, AVX512; 0.004 on this AVX2 one), so the first of three steps that shows it is used;
    one must."""
    d = digits_backdoor
    x, y = d["clean"].images, d["clean"].labels
    for lr in (0.003, 0.004, 0.0025):
        cfg = IBAUConfig(rounds=5, batch_size=25, outer_lr=lr, outer_lr_schedule="constant", seed=1, acc_guard=0.03,
                         guard_mode="select", **NO_SIZE_RULES)  # 360 images unlearn: the rules off, so round 1 harms
        kept, held_back = guard_split(len(x), cfg)
        with torch.no_grad():
            before = float((d["model"](x[held_back]).argmax(1) == y[held_back]).float().mean())
        res = unlearn(copy.deepcopy(d["model"]), (x, y), cfg, progress=False)
        drops = [before - h.guard_acc for h in res.history]
        good = [r + 1 for r, drop in enumerate(drops) if drop <= 0.03]
        if drops[0] > 0.1 and good:  # round 1 costs 4+ images of 40; a later round is back within 0.03
            break
    else:
        pytest.fail(f"no step gave a harmful round 1 and a later round within the allowance (last: {drops})")
    assert res.selected_round == max(good) > 1
    assert held_metrics(d, res.model)["asr"] < 0.2 < d["before"]["asr"]


def test_a_selecting_guard_returns_the_model_as_handed_over_when_every_round_harms_it(digits_backdoor, caplog):
    d = digits_backdoor
    x, y = d["clean"].images, d["clean"].labels
    cfg = IBAUConfig(rounds=3, batch_size=25, outer_lr=0.02, outer_lr_schedule="constant", seed=1, acc_guard=0.03,
                     guard_mode="select", **NO_SIZE_RULES)  # 360 images unlearn: the rules off, so round 1 harms
    res = unlearn(copy.deepcopy(d["model"]), (x, y), cfg, progress=False)
    assert len(res.history) == 3 and res.selected_round == 0
    for k, v in d["model"].state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    assert not res.delta.any()
    assert "returning the model as it was handed over" in caplog.text


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


def test_a_selecting_guard_can_fall_back_to_the_round_closest_to_the_start(digits_backdoor, caplog):
    """``guard_fallback="closest"``: where no round is within ``acc_guard``, the round with the highest slice
    accuracy is returned, its weights and δ, with a warning giving its drop, instead of the handed-over model."""
    d = digits_backdoor
    x, y = d["clean"].images, d["clean"].labels
    kept: list[dict] = []

    def keep(record, model, delta):
        kept.append({k: v.clone() for k, v in model.state_dict().items()})
    cfg = IBAUConfig(rounds=3, batch_size=25, outer_lr=0.02, outer_lr_schedule="constant", seed=1, acc_guard=0.03,
                     guard_mode="select", guard_fallback="closest", **NO_SIZE_RULES)
    res = unlearn(copy.deepcopy(d["model"]), (x, y), cfg, callback=keep, progress=False)
    accs = [h.guard_acc for h in res.history]
    assert len(accs) == 3 and all(a is not None for a in accs)
    closest = max(range(3), key=lambda i: (accs[i], i)) + 1  # the latest of equals
    assert res.selected_round == closest
    for k, v in kept[closest - 1].items():
        assert torch.equal(v, res.model.state_dict()[k]), k
    assert torch.equal(res.delta, res.history[closest - 1].delta)
    assert f"returning round {closest}, the closest" in caplog.text
    assert res.closest_fallback
    assert not unlearn(copy.deepcopy(d["model"]), (x, y), cfg.replace(rounds=1, acc_guard=1.0),
                       progress=False).closest_fallback  # a round within the guard: no fallback
    with pytest.raises(ValueError, match="guard_fallback"):
        IBAUConfig(guard_fallback="best")
