"""The Defense interface: every registered defense builds and shows its config; the base class copies the
model, pauses the clock during evaluation, and records the time to effect; I-BAU and fine-tuning behind it."""
import time

import pytest
import torch

from conftest import held_metrics, held_monitor
from ibau.defenses import DEFENSES, Defense, DefenseResult, defense_class, make_defense
from ibau.defenses.finetune import FineTune
from ibau.metrics import EffectMonitor


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_registry_walk(name):
    cls = defense_class(name)
    assert issubclass(cls, Defense) and cls.name == name
    assert cls.__doc__ and ">>>" in cls.__doc__  # documented with an example
    kwargs = {"train": None} if cls.needs_training_data else {}
    try:
        defense = cls(**kwargs)
    except ValueError as exc:  # a defense that needs its training data says so in one line
        assert cls.needs_training_data and "train" in str(exc)
        return
    assert repr(defense).startswith(type(defense).__name__ + "(") and "seed=" in repr(defense)


def test_unknown_defense_and_bad_config():
    with pytest.raises(ValueError, match="unknown defense"):
        make_defense("nope")
    with pytest.raises(ValueError, match="epochs"):
        FineTune(epochs=0)
    with pytest.raises(ValueError, match="takes a FineTuneConfig"):
        FineTune(config=object())


class Slow(Defense):
    """A fake defense: two checkpoints with 0.05 s of work each; swaps the last layer's bias at step 2."""

    name = "slow"
    config_class = type(FineTune().config)

    def _run(self, model, clean, progress):
        time.sleep(0.05)
        self.checkpoint(model, 1)
        time.sleep(0.05)
        with torch.no_grad():
            list(model.parameters())[-1].add_(1.0)
        self.checkpoint(model, 2)
        return DefenseResult(model=model)


def test_clock_pauses_during_evaluation_and_effect_is_timed(tiny_task):
    model, x, y = tiny_task
    from ibau.data import ImageSet

    calls = []

    class Monitor:
        time_to_effect, acc_at_effect = 0.07, 0.5

        def __call__(self, net, seconds):
            calls.append(seconds)
            time.sleep(0.3)  # slow evaluation must not count as defense time
            return {"acc": 0.5, "asr": 0.1}

    before = [p.clone() for p in model.parameters()]
    result = Slow().run(model, ImageSet(x, y), callback=Monitor(), progress=False)
    assert 0.1 <= result.seconds < 0.3 and len(calls) == 2 and calls[1] < 0.3
    assert [h["step"] for h in result.history] == [1, 2] and result.history[0]["asr"] == 0.1
    assert result.time_to_effect == 0.07 and result.acc_at_effect == 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the caller's model is untouched
    assert not torch.equal(before[-1], list(result.model.parameters())[-1])


def test_effect_monitor_records_first_success_only(tiny_task):
    model, x, y = tiny_task
    from ibau.attacks import BadNets

    trig = BadNets(size=2, target=0)
    mon = EffectMonitor(x, y, trig, 4, threshold=1.01)  # every ASR is below 101%: effect at the first call
    m = mon(model, 3.0)
    mon(model, 5.0)
    assert mon.time_to_effect == 3.0 and mon.acc_at_effect == m["acc"] and set(m) == {"acc", "asr", "ra"}
    never = EffectMonitor(x, y, trig, 4, threshold=-1)
    never(model, 1.0)
    assert never.time_to_effect is None


@pytest.mark.parametrize("name,kw", [("ibau", {"rounds": 2, "batch_size": 50}), ("finetune", {"epochs": 2})])
def test_ibau_and_finetune_reduce_the_backdoor(digits_backdoor, name, kw):
    d = digits_backdoor
    monitor = held_monitor(d)
    result = make_defense(name, seed=0, device="cpu", **kw).run(d["model"], d["clean"], callback=monitor, progress=False)
    after = held_metrics(d, result.model)
    steps = 2
    assert len(result.history) == steps and all("asr" in h for h in result.history)
    assert result.history[-1]["asr"] == pytest.approx(after["asr"])
    if name == "ibau":  # I-BAU removes the backdoor; plain fine-tuning is only a floor
        assert after["asr"] < 0.2 and result.time_to_effect is not None and result.time_to_effect <= result.seconds
        assert after["acc"] > d["before"]["acc"] - 0.1 and result.triggers[-1]["delta"].shape == (3, 32, 32)
    else:
        assert after["acc"] > d["before"]["acc"] - 0.1
        assert any(not torch.equal(a, b) for a, b in zip(d["model"].parameters(), result.model.parameters()))
