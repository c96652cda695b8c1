"""train_classifier: learning-rate schedules, augmentation and the stamp hook."""
import math

import pytest
import torch
from torch import nn

from ibau.data import ImageSet
from ibau.training import flip_crop, train_classifier


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


def test_flip_crop_shifts_and_mirrors_each_image_from_the_generator():
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a = flip_crop(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and torch.equal(a, flip_crop(x, torch.Generator().manual_seed(5)))
    padded = torch.nn.functional.pad(x, [1] * 4)  # 8x8 images: padding 1
    kinds = set()
    for i in range(len(x)):  # every output is one of the 2 x 9 shifted, possibly mirrored, windows
        hits = [(top, left, f) for top in range(3) for left in range(3) for f in (0, 1)
                if torch.equal(a[i], (lambda w, f=f: w.flip(-1) if f else w)(padded[i, :, top:top + 8, left:left + 8]))]
        assert hits, i
        kinds.add(hits[0])
    assert len(kinds) > 6  # drawn per image, not one draw for the batch
    assert any(f for _, _, f in kinds) and any(not f for _, _, f in kinds)


def test_stamp_runs_after_the_augmentation():
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.rand(12, 1, 8, 8, generator=g), torch.randint(0, 2, (12,), generator=g))
    seen = []

    def stamp(x, rows):
        x[:, :, -2:, -2:] = 1.0  # a corner patch that must reach the model where it was put
        seen.append(rows.clone())
        return x

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 2)

        def forward(self, x):
            assert torch.all(x[:, :, -2:, -2:] == 1.0)
            return self.fc(x.flatten(1))

    train_classifier(Spy(), data, epochs=2, batch_size=5, progress=False, device="cpu", augment="flip_crop", stamp=stamp)
    assert sorted(torch.cat(seen).tolist()) == sorted(list(range(12)) * 2)  # every row once per epoch


def test_unknown_augment_is_refused():
    with pytest.raises(ValueError, match="augment 'mixup'.*none, flip_crop"):
        train_classifier(nn.Linear(1, 1), ImageSet(torch.rand(2, 1, 1, 1), torch.zeros(2, dtype=torch.long)),
                         augment="mixup")
