"""The Defense interface: every registered defense builds and shows its config; the base class copies the
model, pauses the clock during evaluation, and records the time to effect; I-BAU and fine-tuning behind it."""
import time

import pytest
import torch

from conftest import held_metrics, held_monitor, same_state
from ibau.data import ImageSet
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


def test_effect_monitor_takes_in_replayed_checkpoints_as_if_measured():
    """A resumed defense replays its kept history to the monitor: the first entry under the threshold sets the
    time to effect, later ones and entries without an ASR do not."""
    mon = EffectMonitor(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), None, 4, threshold=0.2)
    for entry in ({"step": "teacher", "seconds": 1.0}, {"step": 1, "seconds": 2.0, "asr": 0.5, "acc": 0.9},
                  {"step": 2, "seconds": 3.0, "asr": 0.1, "acc": 0.8}, {"step": 3, "seconds": 4.0, "asr": 0.0, "acc": 0.7}):
        mon.replay(entry)
    assert (mon.time_to_effect, mon.acc_at_effect) == (3.0, 0.8)


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


class _Passes:
    """A callback that counts its calls, stops the run at call ``stop`` and records what it is replayed."""

    def __init__(self, stop: int | None = None):
        self.calls, self.stop, self.replayed = 0, stop, []

    def __call__(self, model, seconds):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return {"asr": 1.0 / self.calls, "acc": 0.5}

    def replay(self, entry):
        self.replayed.append(entry["step"])


@pytest.mark.parametrize("name, kw, file, steps, extra", [
    ("sau", {"rounds": 3, "batch_size": 20, "train_mode": True, "pgd_init": "random"}, "rounds.pt",
     ["round 1", "round 2", "round 3"], ["per_round"]),
    ("ft_sam", {"epochs": 3, "batch_size": 20, "augment": "crop"}, "epochs.pt", ["epoch 1", "epoch 2", "epoch 3"],
     ["losses", "perturbation_norm"]),
    ("anp", {"iterations": 12, "checkpoint_every": 4, "batch_size": 16}, "masks.pt",
     ["iteration 4", "iteration 8", "pruned"], ["masks", "losses", "pruned"])])
def test_a_run_stopped_between_passes_continues_after_the_last_one_kept(tiny_task, tmp_path, name, kw, file, steps, extra):
    """With a resume folder the state after each pass of a long defense's main loop is kept (SAU's rounds, FT-SAM's
    epochs, ANP's mask learning at each report): weights or masks, optimiser, the batch-order generator, the global
    RNG, the history and the clock. A run stopped at its third checkpoint and started again runs only what follows
    the second, replays the first two checkpoints to the callback, and ends with the uninterrupted run's model and
    records; a run with other settings starts over."""
    model, x, y = tiny_task
    kw = {**kw, "seed": 3, "device": "cpu"}
    whole = make_defense(name, **kw).run(model, ImageSet(x, y), callback=_Passes(), progress=False)
    with pytest.raises(KeyboardInterrupt):
        make_defense(name, **kw).run(model, ImageSet(x, y), callback=_Passes(stop=3), progress=False, resume_dir=tmp_path)
    assert [f.name for f in tmp_path.iterdir()] == [file]
    again = _Passes()
    resumed = make_defense(name, **kw).run(model, ImageSet(x, y), callback=again, progress=False, resume_dir=tmp_path)
    assert again.calls == 1 and again.replayed == steps[:2] and resumed.extra["resumed_parts"] == 1
    assert same_state(resumed.model, whole.model)
    assert all(resumed.extra[k] == whole.extra[k] for k in extra)
    assert [h["step"] for h in resumed.history] == steps == [h["step"] for h in whole.history]
    assert resumed.seconds >= resumed.history[1]["seconds"]
    other = _Passes()
    fresh = make_defense(name, **{**kw, "seed": 4}).run(model, ImageSet(x, y), callback=other, progress=False,
                                                         resume_dir=tmp_path)
    assert other.calls == 3 and other.replayed == [] and "resumed_parts" not in fresh.extra
