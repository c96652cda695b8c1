"""The round loop: constraints, memory, determinism, API contract."""
import weakref

import pytest
import torch

from ibau import IBAUConfig, unlearn
from ibau.unlearn.inner import solve_delta


def _batches(x, y, bs=20):
    def gen():
        for i in range(0, len(x), bs):
            yield x[i:i + bs], y[i:i + bs]
    return gen


@pytest.mark.parametrize("norm,bound", [("l2", 0.5), ("linf", 0.01)])
def test_projection_holds_after_every_inner_step(tiny_task, norm, bound):
    model, x, y = tiny_task
    cfg = IBAUConfig(norm=norm, norm_bound=bound, inner_lr=1000.0)
    sizes = []

    def check(delta):
        size = float(delta.norm()) if norm == "l2" else float(delta.abs().max())
        sizes.append(size)

    solve_delta(model, _batches(x, y), tuple(x.shape[1:]), cfg, steps=12, on_step=check)
    assert len(sizes) == 12
    assert max(sizes) <= bound * (1 + 1e-6)
    assert max(sizes) >= bound * 0.99  # the bound was active, so the check is not vacuous


def test_clamp_keeps_perturbed_images_valid(tiny_task):
    from ibau.unlearn.inner import perturb
    x = tiny_task[1]
    delta = torch.full(x.shape[1:], 3.0)
    assert float(perturb(x, delta, clamp=True).max()) <= 1.0
    assert float(perturb(x, delta, clamp=False).max()) > 1.0


class SavedBytes:
    """Peak bytes of tensors saved for backward that are alive at once (the autograd graph's memory)."""

    def __init__(self):
        self.live = self.peak = 0

    def _free(self, n):
        self.live -= n

    def pack(self, t):
        box = type("Box", (), {})()
        box.t = t
        n = t.numel() * t.element_size()
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(box, self._free, n)
        return box

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda box: box.t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _peak(model, x, y, steps):
    cfg = IBAUConfig(rounds=1, batch_size=20, inner_steps=steps, outer_steps=2)
    with SavedBytes() as meter:
        unlearn(model, (x, y), cfg, progress=False)
    return meter.peak


def test_memory_does_not_grow_with_inner_steps(tiny_task):
    model, x, y = tiny_task
    p5, p50 = _peak(model, x, y, 5), _peak(model, x, y, 50)
    assert p5 > 0
    assert abs(p50 - p5) / p5 <= 0.10, (p5, p50)


def test_memory_meter_sees_an_unrolled_path(tiny_task):
    """Control: the meter does detect a path that is kept across steps."""
    model, x, y = tiny_task
    with SavedBytes() as meter:
        delta = torch.zeros(x.shape[1:], requires_grad=True)
        kept = []
        for _ in range(10):
            kept.append(model(x[:20] + delta).sum())
    with SavedBytes() as single:
        model(x[:20] + delta).sum()
    assert meter.peak > 5 * single.peak


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_does_not_grow_with_inner_steps(tiny_task):
    model, x, y = tiny_task
    peaks = []
    for steps in (5, 50):
        torch.cuda.reset_peak_memory_stats()
        unlearn(model.cuda(), (x.cuda(), y.cuda()), IBAUConfig(rounds=1, batch_size=20, inner_steps=steps), progress=False)
        peaks.append(torch.cuda.max_memory_allocated())
    assert abs(peaks[1] - peaks[0]) / peaks[0] <= 0.10


def test_input_model_untouched_unless_inplace(tiny_task):
    model, x, y = tiny_task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in res.model.state_dict().items())
    res2 = unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20), inplace=True, progress=False)
    assert res2.model is model
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_deterministic_for_a_seed_on_cpu(tiny_task):
    model, x, y = tiny_task
    runs = [unlearn(model, (x, y), IBAUConfig(rounds=2, batch_size=20, seed=3), progress=False) for _ in range(2)]
    for (k, a), b in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(runs[0].delta, runs[1].delta)
    other = unlearn(model, (x, y), IBAUConfig(rounds=2, batch_size=20, seed=4), progress=False)
    assert not torch.equal(other.delta, runs[0].delta)


def test_history_and_callback(tiny_task):
    model, x, y = tiny_task
    seen = []

    def cb(record, net, delta):
        seen.append(record.round)
        return {"marker": record.round * 10} if record.round < 2 else True

    res = unlearn(model, (x, y), IBAUConfig(rounds=5, batch_size=20), callback=cb, progress=False)
    assert seen == [1, 2] and len(res.history) == 2  # True stopped after round 2
    rec = res.history[0]
    assert rec.extra == {"marker": 10}
    assert rec.delta_norm > 0 and rec.seconds > 0 and rec.inner_loss > 0 and rec.outer_loss > 0
    assert res.delta.shape == x.shape[1:]


def test_accepts_dataset_and_batches(tiny_task):
    model, x, y = tiny_task
    ds = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=15)
    cfg = IBAUConfig(rounds=1, batch_size=20)
    a = unlearn(model, ds, cfg, progress=False)
    b = unlearn(model, loader, cfg, progress=False)
    c = unlearn(model, (x, y), cfg, progress=False)
    assert torch.equal(a.delta, c.delta) and torch.equal(b.delta, c.delta)


def test_interrupt_keeps_finished_rounds(tiny_task):
    model, x, y = tiny_task

    def cb(record, net, delta):
        if record.round == 2:
            raise KeyboardInterrupt

    res = unlearn(model, (x, y), IBAUConfig(rounds=4, batch_size=20), callback=cb, progress=False)
    assert res.interrupted and len(res.history) == 2


@pytest.mark.parametrize("solver", ["fixed_point", "cg"])
def test_both_solvers_and_warm_start_run(tiny_task, solver):
    model, x, y = tiny_task
    res = unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20, solver=solver, warm_start=True), progress=False)
    assert all(torch.isfinite(p).all() for p in res.model.parameters())


def test_train_mode_updates_batchnorm_only_from_outer_batches(tiny_task):
    """model_mode="train": BatchNorm's running statistics follow the outer (mostly clean) batches only; the
    hypergradient's L_in is the eval-mode H that δ maximised, so it neither adds forward passes to the
    statistics nor uses the statistics of a batch of δ-images."""
    model, x, y = tiny_task
    cfg = IBAUConfig(rounds=2, batch_size=20, outer_steps=3, model_mode="train")
    res = unlearn(model, (x, y), cfg, progress=False)
    assert int(res.model[1].num_batches_tracked) == 2 * 3  # one train-mode forward per θ step, none from L_in
    assert not res.model.training
    frozen = unlearn(model, (x, y), cfg.replace(model_mode="eval"), progress=False).model[1]
    assert int(frozen.num_batches_tracked) == 0 and torch.equal(frozen.running_mean, model[1].running_mean)
