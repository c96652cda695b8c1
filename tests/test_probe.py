"""The round probe (``round_selection="probe"``): it watches the class a small δ finds before unlearning,
never changes the rounds, and returns the model of the round its rule picks."""
import pytest
import torch

from ibau import IBAUConfig, unlearn
from ibau.training import iterate_batches
from ibau.unlearn import core
from ibau.unlearn.probe import probe_rate, suspect_class

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(model, x, y, **options):
    """unlearn with the tiny task's settings; returns the result and each round's weights and δ."""
    rounds = []
    cfg = IBAUConfig(rounds=4, batch_size=20, patch_threshold=0, probe_steps=3, min_steps=0, **options)
    result = unlearn(model, (x, y), cfg, progress=False,
                     callback=lambda r, net, d: rounds.append(({k: v.clone() for k, v in net.state_dict().items()},
                                                               d.clone())))
    return result, rounds


@pytest.mark.parametrize("rates,chosen", [
    ([0.5, 0.10, 0.30, 0.14], 4),   # round 4 is within 5 points of the lowest (round 2): the later one
    ([0.5, 0.10, 0.30, 0.20], 2),   # round 4 is not: the lowest
    ([0.5, 0.40, 0.30, 0.20], 4),   # falling all along: the last
])
def test_the_probe_never_changes_the_rounds_and_the_model_of_its_round_is_returned(tiny_task, monkeypatch, rates, chosen):
    model, x, y = tiny_task
    plain, plain_rounds = _run(model, x, y)
    script = iter(rates)
    monkeypatch.setattr(core, "probe_rate", lambda *a, **k: next(script))
    probed, probed_rounds = _run(model, x, y, round_selection="probe")

    assert plain.selected_round == 4 and plain.suspect is None
    assert all(h.probe_rate is None for h in plain.history)
    # the probe draws from its own generator: every round is the round run without it
    for (w0, d0), (w1, d1) in zip(plain_rounds, probed_rounds, strict=True):
        assert torch.equal(d0, d1) and all(torch.equal(w0[k], w1[k]) for k in w0)
    assert [h.probe_rate for h in probed.history] == rates
    assert probed.selected_round == chosen and probed.suspect in range(4)
    weights, delta = probed_rounds[chosen - 1]
    assert all(torch.equal(weights[k], v) for k, v in probed.model.state_dict().items())
    assert torch.equal(probed.delta, delta)


def test_the_probe_finds_the_backdoor_target_and_its_rate_falls_as_the_backdoor_is_unlearned(digits_backdoor):
    d = digits_backdoor
    x, y = d["clean"].images, d["clean"].labels
    model, target = d["model"], d["trigger"].target
    cfg = IBAUConfig(probe_steps=20, batch_size=25)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        own = model(x).argmax(1)
    suspect, share = suspect_class(model, lambda: iterate_batches(x, own, 25, gen), x, cfg, 10)
    assert suspect == target and share > 0.9  # a δ of norm 2 sends nearly every clean digit to the target
    before = probe_rate(model, lambda: iterate_batches(x, y, 25, gen), x, target, cfg, 10)

    result = unlearn(model, (x, y), IBAUConfig(rounds=2, batch_size=25, outer_lr=2e-4, round_selection="probe",
                                               probe_steps=20), progress=False)
    assert result.suspect == target
    rates = [h.probe_rate for h in result.history]
    # before: the target is the cheapest class to reach; after unlearning, about as hard as any other
    assert before > 0.9 and max(rates) < 0.3, (before, rates)
