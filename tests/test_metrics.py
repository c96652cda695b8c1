"""Metrics on a hand-made model whose behaviour is known exactly."""
import pytest
import torch
from torch import nn

from ibau.attacks import BadNets, poison
from ibau.metrics import der, evaluate, failed, per_trigger_asr


class CornerModel(nn.Module):
    """Predicts ``backdoor_to`` when the bottom-right pixel is white, else the label coded in pixel (0, 0)."""

    def __init__(self, num_classes=4, backdoor_to=None):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.c, self.to_ = num_classes, backdoor_to

    def forward(self, x):
        label = (x[:, 0, 0, 0] * 10).round().long()
        if self.to_ == "next":
            label = torch.where(x[:, 0, -2, -2] > 0.99, (label + 1) % self.c, label)
        elif self.to_ is not None:
            label = torch.where(x[:, 0, -2, -2] > 0.99, torch.full_like(label, self.to_), label)
        return nn.functional.one_hot(label, self.c).float() + self.dummy


def _data():
    y = torch.tensor([0, 1, 2, 3, 1, 2, 3, 0])
    x = torch.zeros(8, 3, 8, 8)
    x[:, 0, 0, 0] = y / 10
    return x, y


def test_asr_excludes_target_class_and_ra():
    x, y = _data()
    trig = BadNets(size=2, target=1)
    m = evaluate(CornerModel(backdoor_to=1), x, y, trig, 4)
    assert m == {"acc": 1.0, "asr": 1.0, "ra": 0.0}  # the two class-1 images are not counted
    clean_model = evaluate(CornerModel(), x, y, trig, 4)
    assert clean_model["asr"] == 0.0 and clean_model["ra"] == 1.0


def test_all_to_all():
    x, y = _data()
    trig = BadNets(size=2, all_to_all=True)
    assert evaluate(CornerModel(backdoor_to="next"), x, y, trig, 4)["asr"] == 1.0
    assert evaluate(CornerModel(backdoor_to=1), x, y, trig, 4)["asr"] == pytest.approx(2 / 8)


def test_per_trigger_asr_and_mean():
    x, y = _data()
    out = per_trigger_asr(CornerModel(backdoor_to=1), x, y, [BadNets(size=2, target=1), BadNets(size=2, target=2)], 4)
    assert out["badnets"] == 1.0 and out["badnets_2"] == 0.0 and out["mean"] == 0.5


def test_der_and_failure_rule():
    before, after = {"acc": 0.85, "asr": 0.98}, {"acc": 0.83, "asr": 0.10}
    assert der(before, after) == pytest.approx((0.88 - 0.02 + 1) / 2)
    assert not failed(before, after)
    assert failed(before, {"acc": 0.83, "asr": 0.2})
    assert failed(before, {"acc": 0.74, "asr": 0.0})


def test_poison_draws_non_target_and_leaves_input():
    x, y = _data()
    x0 = x.clone()
    p = poison(x, y, BadNets(size=2, target=1), ratio=0.5, num_classes=4, seed=0)
    assert len(p.indices) == 4 and bool((y[p.indices] != 1).all())
    assert bool((p.labels[p.indices] == 1).all())
    assert torch.equal(x, x0)
    assert float(p.images[p.indices][:, :, -3:-1, -3:-1].min()) == 1.0
    again = poison(x, y, BadNets(size=2, target=1), ratio=0.5, num_classes=4, seed=0)
    assert torch.equal(again.indices, p.indices)


def test_der_and_failure_rule_are_empty_for_a_clean_model():
    """A model without a trigger has ACC only: no DER and no verdict, instead of a KeyError."""
    assert der({"acc": 0.9}, {"acc": 0.88}) is None and failed({"acc": 0.9}, {"acc": 0.5}) is None
