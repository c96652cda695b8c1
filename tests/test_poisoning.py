"""The poisoning strategies of `ibau attack` (issue 16): each trigger family gets its own, and each does its job."""
import pytest
import torch
from torch import nn

from ibau.attacks import ATTACKS, BadNets, Blend, HiddenTrigger, InputAware, MultiTrigger, WaNet, make_trigger, poison
from ibau.attacks.base import Trigger
from ibau.data import ImageSet, load_dataset
from ibau.pipeline.poisoning import (
    POISONS,
    STRATEGIES,
    AttackRun,
    Clean,
    CraftedCleanLabel,
    StampAndRelabel,
    TrainedWithModel,
    poisoning_for,
)


@pytest.fixture(scope="module")
def digits() -> ImageSet:
    train, _ = load_dataset("digits")
    return train.subset(torch.arange(300))


def _run(out, **kw) -> AttackRun:
    base = dict(out=out, resume=False, shape=(3, 32, 32), num_classes=10, poison_ratio=0.1, epochs=1, lr=1e-3,
                batch_size=32, lr_schedule="constant", augment="none", seed=0, device=torch.device("cpu"),
                progress=False)
    return AttackRun(**{**base, **kw})


def _reference() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 10))


def _ht(**kw) -> HiddenTrigger:
    return HiddenTrigger.generate(_reference(), None, seed=0, **{"source": 3, "target": 5, "poisons": 10, "steps": 2,
                                                                 "eps": 8 / 255, "finetune_size": 4, **kw})


def test_every_registered_attack_declares_a_known_family_and_the_old_flags_follow_it():
    for name, cls in ATTACKS.items():
        assert cls.poisoning in STRATEGIES, name
        assert cls.clean_label == (cls.poisoning == "craft") and cls.trains_with_model == (cls.poisoning == "fit")
    assert {n for n, c in ATTACKS.items() if c.poisoning == "craft"} == {"ht"}
    assert {n for n, c in ATTACKS.items() if c.poisoning == "fit"} == {"iab"}
    assert HiddenTrigger().clean_label and not HiddenTrigger().trains_with_model  # on instances too
    assert InputAware().trains_with_model and not BadNets().clean_label


def test_no_trigger_trains_on_the_set_as_it_is(digits, tmp_path):
    strategy = poisoning_for(None)
    assert isinstance(strategy, Clean) and strategy.trigger is None
    victim = strategy.training_set(digits, _run(tmp_path))
    assert victim.images is digits.images and victim.labels is digits.labels
    assert victim.indices == victim.owner == victim.noise == [] and victim.stamp is None


@pytest.mark.parametrize("trigger", [BadNets(target=2), WaNet(target=1, cross_ratio=2.0),
                                     MultiTrigger([BadNets(target=0), Blend(target=3)])], ids=["badnets", "wanet", "multi"])
def test_stamped_triggers_are_stamped_and_relabelled(digits, tmp_path, trigger):
    strategy = poisoning_for(trigger)
    assert type(strategy) is StampAndRelabel and strategy.trigger is trigger
    victim = strategy.training_set(digits, _run(tmp_path, poison_ratio=0.2, seed=4))
    p = poison(digits.images, digits.labels, trigger, 0.2, num_classes=10, seed=4)
    assert torch.equal(victim.images, p.images) and torch.equal(victim.labels, p.labels)
    assert victim.indices == p.indices.tolist() and len(victim.indices) == 60
    assert victim.owner == p.component.tolist() and victim.noise == p.noise_indices.tolist()
    assert (len(victim.noise) == 120) == isinstance(trigger, WaNet)  # WaNet's noise mode: 2 per poisoned image
    assert len(set(victim.owner)) == len(trigger.components())
    assert victim.stamp is None and not list(tmp_path.iterdir())  # nothing written, nothing to re-stamp


def test_stamped_with_augmentation_trains_on_clean_sources_and_stamps_after(digits, tmp_path):
    victim = poisoning_for(BadNets(target=2)).training_set(digits, _run(tmp_path, augment="flip_crop"))
    assert torch.equal(victim.images, digits.images) and victim.stamp is not None
    rows = torch.tensor(victim.indices[:5])
    p = poison(digits.images, digits.labels, BadNets(target=2), 0.1, num_classes=10, seed=0)
    assert torch.allclose(victim.stamp(digits.images[rows].clone(), rows), p.images[rows])


def test_crafted_poisons_are_saved_and_reused_without_the_reference_model(digits, tmp_path):
    trigger = _ht()
    strategy = poisoning_for(trigger)
    assert type(strategy) is CraftedCleanLabel
    victim = strategy.training_set(digits, _run(tmp_path))
    assert (tmp_path / POISONS).exists() and len(victim.indices) == 10
    assert set(victim.owner) == {0} and victim.noise == []
    # the victim's rows: the poisons and 4 clean images of every class, labels untouched (clean label)
    assert len(victim.images) == 10 + 10 * 4 and bool((digits.labels[victim.indices] == 5).all())
    # resumed: a trigger rebuilt from its spec has no reference model, and the saved poisons are used
    rebuilt = make_trigger(**trigger.spec())
    with pytest.raises(ValueError, match="reference model"):
        poisoning_for(rebuilt).training_set(digits, _run(tmp_path / "elsewhere", resume=True))
    again = poisoning_for(rebuilt).training_set(digits, _run(tmp_path, resume=True))
    assert again.indices == victim.indices
    assert torch.equal(again.images, victim.images) and torch.equal(again.labels, victim.labels)


def test_a_multi_trigger_with_a_crafted_part_is_crafted_and_one_with_iab_is_stamped(digits, tmp_path):
    multi = MultiTrigger([_ht(), BadNets(target=0)])
    assert multi.poisoning == "craft" and multi.clean_label
    assert type(poisoning_for(multi)) is CraftedCleanLabel
    victim = poisoning_for(multi).training_set(digits, _run(tmp_path))
    assert (tmp_path / POISONS).exists() and sorted(set(victim.owner)) == [0, 1]
    with_iab = MultiTrigger([InputAware(seed=0), BadNets(target=0)])
    assert with_iab.poisoning == "stamp" and type(poisoning_for(with_iab)) is StampAndRelabel


def test_iab_trains_with_the_model_and_refuses_what_it_cannot_use(digits, tmp_path):
    trigger = InputAware(seed=0, mask_epochs=0)
    strategy = poisoning_for(trigger)
    assert type(strategy) is TrainedWithModel
    with pytest.raises(ValueError, match="drop --lr-schedule cosine"):
        strategy.check(_run(tmp_path, lr_schedule="cosine"))
    with pytest.raises(ValueError, match="drop --augment flip_crop"):
        strategy.check(_run(tmp_path, augment="flip_crop"))
    strategy.check(_run(tmp_path))
    victim = strategy.training_set(digits, _run(tmp_path))
    assert victim.images is digits.images and victim.indices == []  # no poisoned set: fit poisons each batch

    small = ImageSet(digits.images[:64, :, :8, :8], digits.labels[:64])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    saves = []
    before = trigger.spec()["generator"]
    strategy.train(model, strategy.training_set(small, _run(tmp_path)), _run(tmp_path, shape=(3, 8, 8)), None,
                   lambda epoch, loss, state, **extra: saves.append((epoch, state, extra)))
    assert [(e, s) for e, s, _ in saves] == [(0, {"epoch": 1})]
    assert saves[0][2]["trigger"]["generator"] != before  # the checkpoint keeps the networks as trained
    assert (tmp_path / "trigger.json").exists() and strategy.trigger.spec()["generator"] != before


def test_iab_resumes_with_the_networks_of_the_checkpoint(tmp_path):
    trained = InputAware(seed=1, mask_epochs=3)
    strategy = poisoning_for(InputAware(seed=0, mask_epochs=3))
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    small = ImageSet(torch.rand(16, 3, 8, 8), torch.arange(16) % 10)
    saves = []
    strategy.train(model, strategy.training_set(small, _run(tmp_path)), _run(tmp_path, shape=(3, 8, 8), epochs=2),
                   {"train": {"epoch": 2}, "trigger": trained.spec()}, lambda *a, **k: saves.append(a))
    assert saves == []  # every epoch was done before the interruption
    resumed = strategy.trigger
    assert isinstance(resumed, InputAware) and resumed.mask_epochs == 0  # the mask network is not pre-trained again
    assert resumed.spec()["generator"] == trained.spec()["generator"]
    assert resumed.spec()["mask_net"] == trained.spec()["mask_net"]


def test_an_unknown_family_is_refused():
    class Odd(Trigger):
        name = "odd"
        poisoning = "sprinkle"

    with pytest.raises(ValueError, match="poisoning 'sprinkle'"):
        poisoning_for(Odd())
