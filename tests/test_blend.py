"""The blended trigger search (blend_search): the class it finds, the pattern it learns, its rows in the θ steps."""
import importlib

import pytest
import torch
from torch import nn

from conftest import NO_SIZE_RULES, learnt_task
from ibau import IBAUConfig, unlearn
from ibau.unlearn.blend import also_classes, blend, blend_rate, blend_trigger, standout
from ibau.unlearn.guard import guard_split
from ibau.unlearn.inner import class_stamps, targeted_delta

core = importlib.import_module("ibau.unlearn.core")
blend_module = importlib.import_module("ibau.unlearn.blend")
ALPHA = 0.1


class _BlendAndBrightness(nn.Module):
    """Clean images go to class 0. Blending the pattern ``b`` in at α = 0.1 sends them to class 1 (the logit reads
    how much of b's centred pattern u the image carries beyond mid-grey: 0.1 after the blend, ~0 before); making
    the image bright (mean above 0.75) sends them to class 2, which an additive δ does with ease and a blend at
    α = 0.1 cannot (it moves the mean by at most 0.1·(1 − mean))."""

    def __init__(self, b: torch.Tensor):
        super().__init__()
        self.register_buffer("u", b - 0.5)

    def forward(self, x):
        along = ((x - 0.5) * self.u).sum((1, 2, 3)) / self.u.pow(2).sum()
        return torch.stack([torch.zeros(len(x), dtype=x.dtype), 200 * (along - 0.05),
                            100 * (x.mean((1, 2, 3)) - 0.75)], 1)


def _task():
    g = torch.Generator().manual_seed(0)
    b = (torch.rand(3, 8, 8, generator=g, dtype=torch.float64) > 0.5).to(torch.float64)
    x = 0.3 + 0.4 * torch.rand(200, 3, 8, 8, generator=g, dtype=torch.float64)
    return _BlendAndBrightness(b).eval(), x, torch.zeros(200, dtype=torch.long), b


def _batches(x, y, bs=50):
    return lambda: iter([(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)])


def test_the_blend_search_finds_the_blended_backdoor_and_its_pattern_where_an_additive_delta_finds_another_class():
    model, x, y, b = _task()
    before = model(x).argmax(1)
    assert bool((before == 0).all()) and blend_rate(model, x, before, b, ALPHA, 1) == 1.0
    # an additive δ reaches the bright class at once: the class an additive search would unlearn
    additive = targeted_delta(model, _batches(x, y), x[0], 2, IBAUConfig(patch_l1=0.0, inner_lr=1.0), 8)
    assert float((model(x + additive).argmax(1) == 2).double().mean()) > 0.9
    # no blend at α = 0.1 can: the screen keeps the blended backdoor's class
    cfg = IBAUConfig(blend_search=ALPHA, blend_screen=5)
    notes = {}
    pattern, target, rate = blend_trigger(model, _batches(x, y), x, cfg, 30, num_classes=3, notes=notes)
    assert target == 1 and rate > 0.9
    assert notes["rates"][1] > 0.0 == notes["rates"][0] == notes["rates"][2]  # only class 1 is reached at all
    assert float(pattern.min()) >= 0 and float(pattern.max()) <= 1
    # what it learnt is the trigger's pattern: its centred part points along b's
    u, p = (b - 0.5).flatten(), (pattern - 0.5).flatten()
    assert float(u @ p / (u.norm() * p.norm())) > 0.9
    torch.testing.assert_close(blend(x, b, ALPHA), 0.9 * x + 0.1 * b)


def test_blend_search_screens_every_class_in_round_one_and_blends_its_pattern_into_the_rows_before_the_stamp(
        tiny_task, monkeypatch):
    model, x, y = tiny_task
    screened, blended_rows = [], []
    real_pattern, real_blend = blend_module.blend_pattern, core.blend

    def counting_pattern(net, batches, like, target, alpha, steps, **kw):
        screened.append((target, steps))
        return real_pattern(net, batches, like, target, alpha, steps, **kw)

    def watching_blend(images, pattern, alpha):
        blended_rows.append((len(images), alpha))
        return real_blend(images, pattern, alpha)

    monkeypatch.setattr(blend_module, "blend_pattern", counting_pattern)
    monkeypatch.setattr(core, "blend", watching_blend)
    cfg = IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_threshold=0.0, blend_search=0.2, blend_screen=1)
    result = unlearn(model, (x, y), cfg, progress=False)
    inner, outer = core.round_steps(cfg, len(x))
    # round 1: one screen step for each of the 4 classes, then the kept class for the rest of a δ pass;
    # round 2: the kept class only, a whole pass
    kept = result.history[0].blend_class
    assert screened == [(c, 1) for c in range(4)] + [(kept, inner - 1), (kept, inner)]
    assert result.history[1].blend_class == kept and 0 <= result.history[0].blend_fooling <= 1
    # round 1 keeps the screen's rate of every class, the class kept among the highest
    rates = result.history[0].blend_screen
    assert len(rates) == 4 and rates[kept] == max(rates) and result.history[1].blend_screen is None
    # patch_fraction (0.2) of each batch of 30 carries it, blended at α, in every θ step of both rounds
    assert blended_rows == [(6, 0.2)] * (2 * outer)
    # blend_until=1: round 1 searches and carries it, round 2 does neither
    screened.clear()
    blended_rows.clear()
    first = unlearn(model, (x, y), cfg.replace(blend_until=1), progress=False)
    assert screened == [(c, 1) for c in range(4)] + [(kept, inner - 1)] and blended_rows == [(6, 0.2)] * outer
    assert first.history[1].blend_fooling is None and first.history[0].blend_fooling is not None
    # off by default: the records say so
    plain = unlearn(model, (x, y), cfg.replace(blend_search=None), progress=False)
    assert plain.history[0].blend_class is None and plain.history[0].blend_fooling is None


def test_the_gate_carries_a_blended_backdoor_that_stands_out_and_stops_at_the_screen_where_none_does():
    model, x, y, _ = _task()
    # the blended backdoor's class stands out: only class 1 is reached at all, so the gate lets it through
    notes = {}
    _, target, rate = blend_trigger(model, _batches(x, y), x, IBAUConfig(blend_search=ALPHA, blend_screen=15,
                                                                         blend_gate=0.3), 30, 3, notes=notes)
    assert target == 1 and rate > 0.9 and "gated" not in notes and standout(notes["rates"]) >= 0.3
    # a model no blend moves (its output ignores the image), so no class stands out: gated at the screen, with
    # no continued search
    flat = nn.Linear(3 * 8 * 8, 3).double()
    with torch.no_grad():
        flat.weight.zero_()
        flat.bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    flat = nn.Sequential(nn.Flatten(), flat).eval()
    steps = []
    real = blend_module.blend_pattern

    def counting(*args, **kw):
        steps.append(args[5])
        return real(*args, **kw)

    notes = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blend_module, "blend_pattern", counting)
        pattern, target, rate = blend_trigger(flat, _batches(x, y), x, IBAUConfig(
            blend_search=ALPHA, blend_screen=15, blend_gate=0.3), 30, 3, notes=notes)
    assert notes["gated"] is True and notes["rates"] == [0.0, 0.0, 0.0] and steps == [15, 15, 15]
    assert target == 0 and rate == 0.0 and pattern.shape == x[0].shape
    assert standout([0.9, 0.5, 0.2, 0.1]) == pytest.approx(0.7)  # the top against the median of the rest
    assert standout([0.96, 0.92, 0.3, 0.4, 0.2]) == pytest.approx(0.61)  # two backdoors: the runner-up is no bar


def test_a_gated_run_is_the_run_without_the_blend_search_and_its_records_say_why(tiny_task):
    model, x, y = tiny_task
    cfg = IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_threshold=0.0, blend_search=0.2, blend_screen=1)
    gated = unlearn(model, (x, y), cfg.replace(blend_gate=1.0), progress=False)  # nothing stands out by 100 points
    plain = unlearn(model, (x, y), cfg.replace(blend_search=None), progress=False)
    assert [h.blend_gated for h in gated.history] == [True, True]
    assert len(gated.history[0].blend_screen) == 4 and gated.history[1].blend_fooling is None
    assert gated.history[0].blend_class is not None  # the screen's pick, recorded though not carried
    # the screen draws its batches from a generator of its own and θ never sees a pattern: the same run
    torch.testing.assert_close(gated.delta, plain.delta, rtol=0, atol=0)
    for a, b in zip(gated.model.state_dict().values(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a gate of 0 lets any screen through: the pattern is carried as without a gate
    open_gate = unlearn(model, (x, y), cfg.replace(blend_gate=0.0), progress=False)
    ungated = unlearn(model, (x, y), cfg, progress=False)
    assert not any(h.blend_gated for h in open_gate.history)
    for a, b in zip(open_gate.model.state_dict().values(), ungated.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_blend_stop_holds_a_slice_back_once_the_gate_opens_and_stops_carrying_when_a_round_costs_it_too_much(
        monkeypatch):
    """The gate opens (gate 0: any screen): from round 1's θ steps on, a guard_split slice is held back from the θ
    steps and scored after each round. A round that lowers its accuracy by more than blend_stop ends the pattern:
    the later rounds neither search nor carry it. A harsh constant step wrecks the fitted model's slice (12 images,
    all right before; 5 of them after round 1)."""
    model, x, y = learnt_task()
    cfg = IBAUConfig(rounds=3, batch_size=20, min_steps=0, patch_threshold=0.0, blend_search=0.2, blend_screen=1,
                     blend_gate=0.0, outer_lr=0.1, outer_lr_schedule="constant", **NO_SIZE_RULES)
    kept, held_back = guard_split(len(x), cfg)
    seen: list[torch.Tensor] = []  # every image the θ steps are given
    outer_pass = core._outer_pass

    def spy(net, params, opts, solver, batches, *args, **kwargs):
        seen.extend(images for images, *_ in batches())
        return outer_pass(net, params, opts, solver, batches, *args, **kwargs)

    monkeypatch.setattr(core, "_outer_pass", spy)  # the spy's draws move the run: it only shows which images
    unlearn(model, (x, y), cfg.replace(blend_stop=1.0), progress=False)
    monkeypatch.setattr(core, "_outer_pass", outer_pass)
    given = torch.cat(seen)
    assert not any(bool((given == image).all((1, 2, 3)).any()) for image in x[held_back])
    assert all(bool((given == image).all((1, 2, 3)).any()) for image in x[kept])
    never = unlearn(model, (x, y), cfg.replace(blend_stop=1.0), progress=False)
    with torch.no_grad():
        assert never.history[-1].guard_acc == float((never.model(x[held_back]).argmax(1) == y[held_back]).float().mean())
    assert all(h.guard_start == 1.0 for h in never.history)  # the slice's accuracy before round 1: all 12 right
    assert not any(h.blend_stopped for h in never.history)
    assert all(h.blend_fooling is not None for h in never.history)  # searched and carried every round
    drop = 1.0 - never.history[0].guard_acc
    assert drop > 0.25, drop  # the harm the stop is for

    stopped = unlearn(model, (x, y), cfg.replace(blend_stop=drop - 0.05), progress=False)
    assert [h.blend_stopped for h in stopped.history] == [False, True, True]
    assert stopped.history[0].blend_fooling is not None and stopped.history[1].blend_fooling is None
    torch.testing.assert_close(stopped.history[0].delta, never.history[0].delta, rtol=0, atol=0)  # round 1 alike
    assert stopped.history[0].guard_acc == never.history[0].guard_acc
    kept_on = unlearn(model, (x, y), cfg.replace(blend_stop=drop), progress=False)  # at the bar: not over it
    assert not kept_on.history[1].blend_stopped


@pytest.mark.parametrize("rule, slice_acc, previous, stops", [
    ("drop", 0.70, None, True),     # 10 points down on the first carried round: the drop rule stops at once
    ("trend", 0.70, None, False),   # ... the trend rule lets the later rounds win it back
    ("trend", 0.72, 0.70, False),   # still over the bar, but rising: carry on
    ("trend", 0.70, 0.70, True),    # over the bar and no higher than the round before: stop
    ("trend", 0.79, 0.90, False),   # fell, but within the bar of the model as handed over: carry on
    ("drop", 0.79, 0.90, False),
])
def test_the_stop_rules_read_the_slice_as_documented(rule, slice_acc, previous, stops):
    cfg = IBAUConfig(blend_search=0.1, blend_gate=0.45, blend_stop=0.02, blend_stop_rule=rule)
    assert core._blend_stops(cfg, True, 0.80, slice_acc, previous) is stops
    assert core._blend_stops(cfg, False, 0.80, slice_acc, previous) is False  # a round that carried nothing


def test_the_trend_rule_lets_round_1_cost_the_slice_and_stops_once_a_round_does_not_win_it_back():
    """The harsh step of the test above: round 1 costs the slice more than the bar, which ends the pattern under
    the drop rule. Under the trend rule round 2 still carries it; whether round 3 does follows from the slice."""
    model, x, y = learnt_task()
    cfg = IBAUConfig(rounds=3, batch_size=20, min_steps=0, patch_threshold=0.0, blend_search=0.2, blend_screen=1,
                     blend_gate=0.0, outer_lr=0.1, outer_lr_schedule="constant", **NO_SIZE_RULES)
    never = unlearn(model, (x, y), cfg.replace(blend_stop=1.0), progress=False)
    bar = (1.0 - never.history[0].guard_acc) - 0.05
    trend = unlearn(model, (x, y), cfg.replace(blend_stop=bar, blend_stop_rule="trend"), progress=False)
    first, second, third = trend.history
    assert first.guard_acc == never.history[0].guard_acc and first.guard_start - first.guard_acc > bar
    assert not second.blend_stopped and second.blend_fooling is not None  # carried after a costly round 1
    ends = first.guard_start - second.guard_acc > bar and second.guard_acc <= first.guard_acc
    assert third.blend_stopped is ends and (third.blend_fooling is None) is ends


def test_blend_rounds_sets_the_number_of_rounds_where_the_gate_opens_as_a_run_of_that_many(tiny_task):
    """Round 1's screen decides the run's length before any θ step: an open gate gives blend_rounds rounds, the θ
    step's cosine planned over them (the very run of rounds=blend_rounds); a closed gate keeps ``rounds``."""
    model, x, y = tiny_task
    cfg = IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_threshold=0.0, blend_search=0.2, blend_screen=1)
    opened = unlearn(model, (x, y), cfg.replace(blend_gate=0.0, blend_rounds=4), progress=False)
    four = unlearn(model, (x, y), cfg.replace(blend_gate=0.0, rounds=4), progress=False)
    assert len(opened.history) == 4
    torch.testing.assert_close(opened.delta, four.delta, rtol=0, atol=0)
    for a, b in zip(opened.model.state_dict().values(), four.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    closed = unlearn(model, (x, y), cfg.replace(blend_gate=1.0, blend_rounds=4), progress=False)
    two = unlearn(model, (x, y), cfg.replace(blend_gate=1.0), progress=False)
    assert len(closed.history) == 2 and closed.history[0].blend_gated
    for a, b in zip(closed.model.state_dict().values(), two.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    one = unlearn(model, (x, y), cfg.replace(blend_gate=0.0, blend_rounds=1), progress=False)  # fewer rounds too
    assert len(one.history) == 1


def test_blend_stop_holds_nothing_back_where_the_gate_stays_closed(tiny_task):
    model, x, y = tiny_task
    cfg = IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_threshold=0.0, blend_search=0.2, blend_screen=1)
    gated = unlearn(model, (x, y), cfg.replace(blend_gate=1.0, blend_stop=0.0), progress=False)
    plain = unlearn(model, (x, y), cfg.replace(blend_search=None), progress=False)
    assert all(h.guard_acc is None and h.blend_gated for h in gated.history)
    for a, b in zip(gated.model.state_dict().values(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _TwoBlends(nn.Module):
    """Clean images go to class 0; blending ``b1`` in at α = 0.1 sends them to class 1, ``b2`` to class 2 (each logit
    reads how much of its centred pattern the image carries beyond mid-grey, as :class:`_BlendAndBrightness`); classes
    3 and 4 are never reached: a model with two blended backdoors."""

    def __init__(self, b1: torch.Tensor, b2: torch.Tensor):
        super().__init__()
        self.register_buffer("u", torch.stack([b1 - 0.5, b2 - 0.5]))

    def forward(self, x):
        along = ((x - 0.5).unsqueeze(1) * self.u).sum((2, 3, 4)) / self.u.pow(2).sum((1, 2, 3))
        low = torch.full((len(x), 2), -100.0, dtype=x.dtype)
        return torch.cat([torch.zeros(len(x), 1, dtype=x.dtype), 200 * (along - 0.05), low], 1)


def test_also_classes_keeps_every_further_class_that_stands_out_above_the_median():
    # the seven-trigger screens of docs/presets.md (stop 59): Blend's target 3 kept, Smooth's target 1 stands out too
    confirm = [0.27, 0.82, 0.46, 0.97, 0.48, 0.61, 0.30, 0.21, 0.45, 0.34]
    assert also_classes(confirm, kept=3, bar=0.3) == [1]  # 82 against a median of 45: 37 points
    assert also_classes(confirm, kept=3, bar=0.4) == []
    # a single blended backdoor (CIFAR-10 Smooth, model trained afterwards): the runner-up stands out by 23 points
    smooth = [0.30, 0.33, 0.35, 0.31, 0.40, 0.20, 0.97, 0.15, 0.17, 0.12]
    assert also_classes(smooth, kept=6, bar=0.3) == []
    # several: the highest rate first, ties to the lowest class; the kept class is never among them
    assert also_classes([0.9, 0.1, 0.8, 0.1, 0.8, 0.1, 0.1], kept=0, bar=0.5) == [2, 4]
    assert also_classes([0.9, 0.6, 0.6, 0.1], kept=0, bar=0.0) == [1, 2]  # a bar of 0: at or above the others' median


def test_blend_also_finds_the_second_blended_backdoor_and_its_pattern():
    g = torch.Generator().manual_seed(0)
    b1, b2 = ((torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) > 0.5).to(torch.float64))
    x = 0.3 + 0.4 * torch.rand(200, 3, 8, 8, generator=g, dtype=torch.float64)
    model, y = _TwoBlends(b1, b2).eval(), torch.zeros(200, dtype=torch.long)
    cfg = IBAUConfig(blend_search=ALPHA, blend_screen=15, blend_gate=0.3, blend_also=0.3)
    notes = {}
    _, kept, rate = blend_trigger(model, _batches(x, y), x, cfg, 30, 5, notes=notes)
    assert kept in (1, 2) and rate > 0.9 and "gated" not in notes
    (other,) = also_classes(notes["rates"], kept, cfg.blend_also)
    assert other == 3 - kept  # the other backdoor's class, and only it (classes 3 and 4 are never reached)
    pattern, target, rate = blend_trigger(model, _batches(x, y), x, cfg, 30, 5, target=other)
    assert target == other and rate > 0.9
    u, p = ((b1 if other == 1 else b2) - 0.5).flatten(), (pattern - 0.5).flatten()
    assert float(u @ p / (u.norm() * p.norm())) > 0.9  # the second trigger's own pattern


def test_blend_also_carries_each_further_pattern_in_turn_and_nothing_changes_where_no_class_qualifies(
        tiny_task, monkeypatch):
    model, x, y = tiny_task
    cfg = IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_threshold=0.0, blend_search=0.2, blend_screen=1,
                     blend_gate=0.0)
    carried: list[torch.Tensor] = []  # the pattern each θ step's carried rows get
    real_blend = core.blend

    def watching_blend(images, pattern, alpha):
        carried.append(pattern)
        return real_blend(images, pattern, alpha)

    monkeypatch.setattr(core, "blend", watching_blend)
    result = unlearn(model, (x, y), cfg.replace(blend_also=0.0), progress=False)
    monkeypatch.setattr(core, "blend", real_blend)
    first, second = result.history
    assert first.blend_also and first.blend_also == second.blend_also  # round 1 picks them; every round searches them
    assert first.blend_class not in first.blend_also
    assert first.blend_also == also_classes(first.blend_screen, first.blend_class, 0.0)
    assert len(first.blend_also_fooling) == len(first.blend_also) and all(0 <= f <= 1 for f in first.blend_also_fooling)
    k = 1 + len(first.blend_also)
    _, outer = core.round_steps(cfg, len(x))
    assert len(carried) == 2 * outer
    for r in range(2):  # within a round, step t carries pattern t mod k: k distinct patterns in turn
        steps = carried[r * outer:(r + 1) * outer]
        assert len({id(p) for p in steps}) == min(k, outer)
        assert all(steps[t] is steps[t % k] for t in range(outer))
    # a bar no class reaches: the run is the run without the option, bit for bit, and the records say none
    none = unlearn(model, (x, y), cfg.replace(blend_also=1.0), progress=False)
    plain = unlearn(model, (x, y), cfg, progress=False)
    assert all(h.blend_also is None and h.blend_also_fooling is None for h in none.history)
    torch.testing.assert_close(none.delta, plain.delta, rtol=0, atol=0)
    for a, b in zip(none.model.state_dict().values(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _TwoPatches(nn.Module):
    """Class 0 for clean images (pixels in [0.3, 0.7]); a bright 2×2 corner sends an image to class 1 (top left) or to
    class 2 (bottom right); class 3 is never reached: two patch backdoors, one stamp of 4 pixels each."""

    def forward(self, x):
        corner = [x[:, :, :2, :2].mean((1, 2, 3)), x[:, :, -2:, -2:].mean((1, 2, 3))]
        return torch.stack([torch.zeros(len(x), dtype=x.dtype), *(60 * (c - 0.85) for c in corner),
                            torch.full((len(x),), -100.0, dtype=x.dtype)], 1)


def test_class_stamps_reads_a_stamp_for_every_class_a_patch_reaches():
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(100, 3, 8, 8, generator=g, dtype=torch.float64)
    model, y = _TwoPatches().eval(), torch.zeros(100, dtype=torch.long)
    cfg = IBAUConfig()
    found = class_stamps(model, _batches(x, y), x, cfg, 20, 4)
    assert [c for *_, c in found] == [1, 2]  # class 3 is never reached, class 0 is every image's already
    for mask, pattern, rate, c in found:
        corner = (slice(0, 2), slice(0, 2)) if c == 1 else (slice(6, 8), slice(6, 8))
        assert int(mask.sum()) == 4 and bool((mask[0][corner] == 1).all()) and rate == 1.0
        assert bool((pattern[:, corner[0], corner[1]] == 1).all())  # the stamp's pattern is the bright corner
    assert [c for *_, c in class_stamps(model, _batches(x, y), x, cfg, 20, 4, skip=1)] == [2]


def test_patch_also_stamps_every_class_stamp_in_turn_in_round_1_only_where_blend_also_found_further_classes(
        tiny_task, monkeypatch):
    model, x, y = tiny_task
    masks = [torch.zeros(1, 8, 8) for _ in range(2)]
    masks[0][0, 0, 0] = 1
    masks[1][0, 7, 7] = 1
    fake = [(masks[0], torch.ones(3, 8, 8), 1.0, 2), (masks[1], torch.ones(3, 8, 8), 0.999, 3)]
    calls, inputs = [], []
    monkeypatch.setattr(core, "class_stamps", lambda *a, **k: calls.append(k["skip"]) or fake)
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: None)  # δ gives no stamp of its own
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: None)  # nor the class search: only patch_also's
    cfg = IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_threshold=0.5, blend_search=0.2, blend_screen=1,
                     blend_gate=0.0, blend_also=0.0, patch_also=True)
    hook = model.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach().clone()))
    result = unlearn(model, (x, y), cfg, progress=False)
    hook.remove()
    first, second = result.history
    assert first.blend_also and calls == [None]  # once, in round 1, where blend_also found further classes
    assert first.patch_also == [2, 3] and first.patch_also_pixels == [1, 1]
    assert second.patch_also is None and second.patch_also_pixels is None
    # the θ steps' batches of round 1 (30 images; the hyper batch has 20) stamp the two stamps in turn on their
    # last patch_fraction (6) rows: step 0 the top-left pixel, step 1 the bottom-right one
    _, outer = core.round_steps(cfg, len(x))
    batches = [b for b in inputs if len(b) == 30]
    assert outer >= 2 and len(batches) >= 2
    stamped_rows = [b[-6:] for b in batches]
    theta = [rows for rows in stamped_rows if bool((rows[:, :, 0, 0] == 1).all()) != bool((rows[:, :, 7, 7] == 1).all())]
    assert [bool((rows[:, :, 0, 0] == 1).all()) for rows in theta[:2]] == [True, False]
    # where blend_also finds nothing, patch_also changes nothing: no search, the same run bit for bit
    monkeypatch.setattr(core, "class_stamps", lambda *a, **k: pytest.fail("no further class: no stamp search"))
    quiet = unlearn(model, (x, y), cfg.replace(blend_also=1.0), progress=False)
    plain = unlearn(model, (x, y), cfg.replace(blend_also=1.0, patch_also=False), progress=False)
    assert all(h.patch_also is None for h in quiet.history)
    for a, b in zip(quiet.model.state_dict().values(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("options, message", [
    ({"blend_search": 0.0}, "blend_search must be a blend weight α in"),
    ({"blend_search": 1.0}, "blend_search must be a blend weight α in"),
    ({"blend_search": float("nan")}, "blend_search must be a blend weight α in"),
    ({"blend_search": 0.1, "smooth_search": 3.0}, "blend_search and smooth_search both take the same rows"),
    ({"blend_screen": 0}, "blend_screen must be >= 1"),
    ({"blend_search": 0.1, "blend_gate": 1.5}, "blend_gate must be a share of the clean images"),
    ({"blend_search": 0.1, "blend_gate": float("nan")}, "blend_gate must be a share of the clean images"),
    ({"blend_gate": 0.3}, "blend_gate gates the blended search: set blend_search"),
    ({"blend_until": 1}, "blend_until must be a round >= 1 with blend_search set"),
    ({"blend_search": 0.1, "blend_until": 0}, "blend_until must be a round >= 1 with blend_search set"),
    ({"blend_search": 0.1, "blend_stop": 0.02}, "blend_stop must be an accuracy drop in"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "blend_stop": -0.1}, "blend_stop must be an accuracy drop in"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "blend_stop": 0.02, "blend_stop_rule": "slope"},
     "blend_stop_rule must be 'drop'"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "blend_stop_rule": "trend"}, "refines blend_stop: set blend_stop"),
    ({"blend_search": 0.1, "blend_rounds": 5}, "blend_rounds must be a number of rounds >= 1 with blend_gate"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "blend_rounds": 0}, "blend_rounds must be a number of rounds >= 1"),
    ({"blend_search": 0.1, "blend_also": 0.3}, "blend_also must be a share of the clean images in"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "blend_also": 1.5}, "blend_also must be a share of the clean images in"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "blend_also": float("nan")}, "blend_also must be a share"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "patch_also": True}, "patch_also acts where blend_also finds"),
    ({"blend_search": 0.1, "blend_gate": 0.45, "blend_also": 0.3, "patch_also": True, "patch_threshold": 0.0},
     "patch_also acts where blend_also finds"),
])
def test_impossible_blend_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as err:
        IBAUConfig(**options)
    assert "\n" not in str(err.value)
