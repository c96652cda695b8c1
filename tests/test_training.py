"""train_classifier's learning-rate schedules."""
import math

import pytest
import torch
from torch import nn

from ibau.data import ImageSet
from ibau.training import train_classifier


def _lrs_seen(monkeypatch, **kw):
    seen, real_step = [], torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.rand(10, 1, 4, 4, generator=g), torch.randint(0, 2, (10,), generator=g))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    train_classifier(model, data, epochs=2, lr=1e-2, batch_size=4, progress=False, device="cpu", **kw)
    return seen


def test_cosine_anneals_per_step_from_lr_towards_zero(monkeypatch):
    seen = _lrs_seen(monkeypatch, lr_schedule="cosine")  # 3 steps per epoch, 2 epochs
    assert seen == pytest.approx([1e-2 * 0.5 * (1 + math.cos(math.pi * t / 6)) for t in range(6)])
    assert seen[0] == 1e-2 and seen[-1] < 1e-3


def test_constant_keeps_lr(monkeypatch):
    assert _lrs_seen(monkeypatch) == [1e-2] * 6


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="lr_schedule 'step'.*constant, cosine"):
        train_classifier(nn.Linear(1, 1), ImageSet(torch.rand(2, 1, 1, 1), torch.zeros(2, dtype=torch.long)),
                         lr_schedule="step")
