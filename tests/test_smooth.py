"""The low-frequency trigger search (smooth_search): the projection, the class it finds, its rows in the θ steps."""
import importlib

import pytest
import torch
from torch import nn

from ibau import IBAUConfig, unlearn
from ibau.attacks import Smooth
from ibau.unlearn.inner import targeted_delta
from ibau.unlearn.smooth import lowpass, smooth_delta, smooth_rate, smooth_trigger

core = importlib.import_module("ibau.unlearn.core")
smooth_module = importlib.import_module("ibau.unlearn.smooth")


def _checker(shape, amplitude):
    """The highest-frequency pattern there is: ±amplitude alternating between neighbouring pixels."""
    c, h, w = shape
    sign = (torch.arange(h)[:, None] + torch.arange(w)[None]) % 2 * 2 - 1
    return amplitude * sign.to(torch.float64).expand(c, h, w).clone()


def test_lowpass_is_an_orthogonal_projection_that_keeps_a_smooth_trigger_and_removes_a_checkerboard():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
    pa = lowpass(a, 3)
    torch.testing.assert_close(lowpass(pa, 3), pa)  # idempotent
    torch.testing.assert_close((pa * b).sum(), (a * lowpass(b, 3)).sum())  # symmetric: orthogonal
    assert 0 < float(pa.norm()) < 0.5 * float(a.norm())  # most of white noise is high-frequency
    smooth = Smooth(cutoff=3, amplitude=0.15).perturbation((3, 32, 32)).double()
    # the trigger is rounded to 1e-4 when made, so it is low-pass to that precision
    torch.testing.assert_close(lowpass(smooth, 3), smooth, rtol=0, atol=1e-3)
    assert float(lowpass(_checker((3, 16, 16), 0.1), 3).abs().max()) < 1e-12


class _TwoBackdoors(nn.Module):
    """Clean images go to class 0; adding the smooth pattern ``s`` sends them to class 1, adding the
    checkerboard ``c`` (of smaller norm) to class 2: a pixel-space search reaches class 2, a smooth one only 1."""

    def __init__(self, s: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.register_buffer("s", s)
        self.register_buffer("c", c)

    def forward(self, x):
        def along(p):  # how much of p the image carries beyond mid-grey
            return ((x - 0.5) * p).sum((1, 2, 3)) / p.pow(2).sum()
        return torch.stack([torch.zeros(len(x), dtype=x.dtype), 20 * (along(self.s) - 0.5),
                            20 * (along(self.c) - 0.5)], 1)


def _two_backdoors():
    s = Smooth(cutoff=2, amplitude=0.3, seed=1).perturbation((3, 16, 16)).double()
    c = _checker((3, 16, 16), 0.05)
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(200, 3, 16, 16, generator=g, dtype=torch.float64)
    return _TwoBackdoors(s, c).eval(), x, torch.zeros(200, dtype=torch.long), s, c


def _batches(x, y, bs=50):
    return lambda: iter([(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)])


def test_the_smooth_search_finds_the_smooth_backdoor_a_pixel_search_passes_by():
    model, x, y, s, c = _two_backdoors()
    assert float(c.norm()) < 0.5 * float(s.norm())  # the checkerboard is the cheaper trigger
    cfg = IBAUConfig(smooth_search=float(s.norm()), smooth_cutoff=3, smooth_screen=4, inner_lr=2.0)
    batches = _batches(x, y)
    before = model(x).argmax(1)
    assert bool((before == 0).all())
    # in pixel space, with the same bound and steps, the checkerboard's class is reached as well
    pixel = targeted_delta(model, batches, x[0], 2, cfg.replace(patch_l1=0.0), 8, bound=cfg.smooth_search)
    assert smooth_rate(model, x, before, pixel, 2) > 0.9
    # restricted to low frequencies it cannot be; the screen keeps the smooth backdoor's class
    assert smooth_rate(model, x, before, smooth_delta(model, batches, x[0], 2, cfg, 8), 2) == 0.0
    delta, target, rate = smooth_trigger(model, batches, x, cfg, 8, num_classes=3)
    assert target == 1 and rate > 0.9
    torch.testing.assert_close(lowpass(delta, 3), delta)
    assert float(delta.norm()) <= cfg.smooth_search * (1 + 1e-9)
    # given the class (the later rounds), the same δ from 0 in as many steps
    again, same, _ = smooth_trigger(model, batches, x, cfg, 8, num_classes=3, target=1)
    assert same == 1 and float((again - delta).norm()) < 0.5 * float(delta.norm())


def test_smooth_search_screens_every_class_in_round_one_and_puts_its_delta_on_the_rows_before_the_stamp(
        tiny_task, monkeypatch):
    model, x, y = tiny_task
    screened, smoothed_rows = [], []
    real_delta, real_perturb = smooth_module.smooth_delta, core.perturb

    def counting_delta(net, batches, like, target, cfg, steps, **kw):
        screened.append((target, steps))
        return real_delta(net, batches, like, target, cfg, steps, **kw)

    def watching_perturb(images, delta, clamp):
        if clamp:  # the θ steps clamp only the smooth rows (δ's own rows follow cfg.clamp, False here)
            smoothed_rows.append(len(images))
        return real_perturb(images, delta, clamp)

    monkeypatch.setattr(smooth_module, "smooth_delta", counting_delta)
    monkeypatch.setattr(core, "perturb", watching_perturb)
    cfg = IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_threshold=0.0, smooth_search=1.0, smooth_screen=1)
    result = unlearn(model, (x, y), cfg, progress=False)
    inner, outer = core.round_steps(cfg, len(x))
    # round 1: one screen step for each of the 4 classes, then the kept class for the rest of a δ pass;
    # round 2: the kept class only, a whole pass
    kept = result.history[0].smooth_class
    assert screened == [(c, 1) for c in range(4)] + [(kept, inner - 1), (kept, inner)]
    assert result.history[1].smooth_class == kept and 0 <= result.history[0].smooth_fooling <= 1
    # patch_fraction (0.2) of each batch of 30 carries it, in every θ step of both rounds
    assert smoothed_rows == [6] * (2 * outer)
    # smooth_rounds "first": round 1's search only, its δ on the same rows of every round
    screened[:], smoothed_rows[:] = [], []
    first = unlearn(model, (x, y), cfg.replace(smooth_rounds="first"), progress=False)
    assert screened == [(c, 1) for c in range(4)] + [(first.history[0].smooth_class, inner - 1)]
    assert smoothed_rows == [6] * (2 * outer) and first.history[1].smooth_fooling is None
    assert first.history[1].smooth_class == first.history[0].smooth_class
    # off by default: the records say so
    plain = unlearn(model, (x, y), cfg.replace(smooth_search=None), progress=False)
    assert plain.history[0].smooth_class is None and plain.history[0].smooth_fooling is None


@pytest.mark.parametrize("options, message", [
    ({"smooth_search": 0.0}, "smooth_search must be an ℓ2 radius > 0"),
    ({"smooth_search": float("nan")}, "smooth_search must be an ℓ2 radius > 0"),
    ({"smooth_cutoff": 0.5}, "smooth_cutoff must be >= 1"),
    ({"smooth_screen": 0}, "smooth_screen must be >= 1"),
    ({"smooth_rounds": "last"}, "smooth_rounds must be one of every, first"),
])
def test_impossible_smooth_options_are_one_line_errors(options, message):
    with pytest.raises(ValueError, match=message) as err:
        IBAUConfig(**options)
    assert "\n" not in str(err.value)
