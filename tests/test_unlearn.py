"""The round loop: constraints, memory, determinism, API contract."""
import importlib
import weakref

import pytest
import torch
from torch import nn

from conftest import NO_SIZE_RULES, tiny_net
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


# ---------------------------------------------------------------------------------------------
# Smaller defects of issue 15, each with a test that failed before its fix
# ---------------------------------------------------------------------------------------------
def test_a_float64_model_runs_in_float64(tiny_task):
    model, x, y = tiny_task
    res = unlearn(model.double(), (x, y), IBAUConfig(rounds=1, batch_size=20), progress=False)
    assert res.delta.dtype == torch.float64
    assert all(p.dtype == torch.float64 and torch.isfinite(p).all() for p in res.model.parameters())


def test_a_model_error_that_is_not_about_shapes_keeps_its_own_message(tiny_task):
    _, x, y = tiny_task

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 4)

        def forward(self, x):
            raise RuntimeError("CUDA driver exploded")

    with pytest.raises(RuntimeError, match="CUDA driver exploded"):
        unlearn(Broken(), (x, y), IBAUConfig(rounds=1), progress=False)
    wrong = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 4))
    with pytest.raises(ValueError, match="do not fit the model") as info:
        unlearn(wrong, (x, y), IBAUConfig(rounds=1), progress=False)
    assert isinstance(info.value.__cause__, RuntimeError)  # the cause is kept for --debug


def test_train_mode_dropout_is_seeded_and_leaves_the_global_rng_alone(tiny_task):
    _, x, y = tiny_task
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 16), torch.nn.Dropout(0.5),
                                torch.nn.Linear(16, 4)).eval()
    cfg = IBAUConfig(rounds=1, batch_size=20, model_mode="train", seed=3)
    torch.manual_seed(123)
    a = unlearn(model, (x, y), cfg, progress=False).model
    after_a = torch.rand(1)
    torch.manual_seed(456)
    b = unlearn(model, (x, y), cfg, progress=False).model
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # same seed, same weights
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_a)  # the caller's RNG stream is unchanged by unlearn


def test_interrupted_run_returns_the_delta_of_the_model_it_returns(tiny_task):
    model, x, y = tiny_task
    calls = {"n": 0}

    class Interrupting(torch.nn.Module):  # Ctrl-C in the middle of round 2's θ steps
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inp):
            calls["n"] += 1
            if self.training is False and calls["n"] == calls.get("stop", -1):
                raise KeyboardInterrupt
            return self.net(inp)

    wrapped = Interrupting(model)
    cfg = IBAUConfig(rounds=3, batch_size=20)
    after_round_1 = []  # the state the full run had after its round 1 (a cosine step depends on the round count)
    full = unlearn(wrapped, (x, y), cfg, progress=False,
                   callback=lambda r, net, d: r.round == 1 and after_round_1.extend(
                       v.clone() for v in net.state_dict().values()) and None)
    calls["n"] = 0
    unlearn(wrapped, (x, y), cfg.replace(rounds=1), progress=False)
    # the check of the data and round 1, then round 2's δ search (3 steps, 2 forwards each), then 1 θ step
    calls["n"], calls["stop"] = 0, calls["n"] + 3 * 2 + 2 + 1
    res = unlearn(wrapped, (x, y), cfg, progress=False)
    assert res.interrupted and len(res.history) == 1
    assert torch.equal(res.delta, res.history[-1].delta) and torch.equal(res.delta, full.history[0].delta)
    assert after_round_1 and all(torch.equal(p, q) for p, q in zip(res.model.state_dict().values(), after_round_1))


def test_flush_denormal_is_restored_not_forced_off(tiny_task):
    model, x, y = tiny_task
    probe = lambda: float((torch.tensor([1e-39]) * torch.tensor([1.0]))[0]) == 0.0
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20), progress=False)
        assert probe()  # the caller had it on: still on
    finally:
        torch.set_flush_denormal(False)
    unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20), progress=False)
    assert not probe()


def test_rounds_report_fooling_rates_and_solver_residuals(tiny_task):
    model, x, y = tiny_task
    res = unlearn(model, (x, y), IBAUConfig(rounds=2, batch_size=20, solver="minres", solver_iters=3), progress=False)
    for rec in res.history:
        assert len(rec.fooling) == 4 and abs(sum(rec.fooling) - 1) < 1e-9
        assert 0 <= rec.solver_residual <= 1 and rec.solver_breakdowns == 0  # MINRES never rises above ‖b‖


def test_cg_breakdown_is_counted_and_logged(tiny_task, caplog, monkeypatch):
    from ibau.unlearn import solvers
    model, x, y = tiny_task

    def negative(matvec, b, x0=None, *, iters=5, tol=1e-12, stats=None):  # CG on a system that is -I
        return solvers.conjugate_gradient(lambda v: -v, b, x0, iters=iters, tol=tol, stats=stats)

    monkeypatch.setitem(solvers.SOLVERS, "cg", negative)
    with caplog.at_level("WARNING", logger="ibau.unlearn.core"):
        res = unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20, solver="cg", min_steps=0), progress=False)
    assert res.history[0].solver_breakdowns == 3  # every θ step of the round (60 images / 20)
    assert "negative curvature" in caplog.text


def test_reference_keeps_the_data_order_and_its_first_batch(tiny_task, monkeypatch):
    """The authors' loader does not shuffle: the hypergradient's L_in is always on the first images."""
    from ibau.unlearn import core
    model, x, y = tiny_task
    seen = []
    real = core.implicit_hypergradient

    def spy(inner_loss, outer_loss, delta, params, solver, **kw):
        seen.append(kw["norm"])
        return real(inner_loss, outer_loss, delta, params, solver, **kw)

    monkeypatch.setattr(core, "implicit_hypergradient", spy)
    order = []
    def in_order(xs, ys, bs, gen, shuffle):
        order.append(shuffle)
        return iter([(xs[i:i + bs], ys[i:i + bs]) for i in range(0, len(xs), bs)])
    monkeypatch.setattr(core, "iterate_batches", in_order)
    unlearn(model, (x, y), IBAUConfig.reference(rounds=1, batch_size=20), progress=False)
    assert set(order) == {False} and set(seen) == {"none"}


def test_min_steps_makes_the_work_follow_the_clean_set(tiny_task, monkeypatch):
    from ibau.unlearn import core
    model, x, y = tiny_task
    counted = {}
    real = core.solve_delta

    def spy(model, batches, shape, cfg, steps, **kw):
        counted["inner"] = steps
        return real(model, batches, shape, cfg, steps, **kw)

    monkeypatch.setattr(core, "solve_delta", spy)
    res = unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20, min_steps=7), progress=False)
    assert counted["inner"] == 7  # 60 images at batch 20 are 3 steps a pass; at least 7 are taken
    assert res.history[0].outer_loss > 0
    unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20, min_steps=2, inner_passes=2), progress=False)
    assert counted["inner"] == 6  # two passes are more than min_steps
    unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20, min_steps=0, inner_passes=0.5), progress=False)
    assert counted["inner"] == 2  # half of 3 batches, rounded up
    with pytest.raises(ValueError, match="inner_passes must be > 0"):
        IBAUConfig(inner_passes=0)


def test_inner_restarts_search_several_deltas_and_the_theta_steps_take_them_in_turn(tiny_task, monkeypatch):
    from ibau.unlearn import core
    model, x, y = tiny_task
    searches, used = [], []
    real_solve, real_hyper = core.solve_delta, core.implicit_hypergradient

    def solve_spy(model, batches, shape, cfg, steps, **kw):
        first = next(batches())[0].flatten(1).sum(1).tolist()  # the order this search sees (its first images)
        searches.append(first)
        delta, h = real_solve(model, batches, shape, cfg, steps, **kw)
        return torch.full_like(delta, 0.01 * len(searches)), h  # tell the searches apart: δ_i = 0.01·i

    def hyper_spy(inner_loss, outer_loss, delta, params, solver, **kw):
        used.append(round(100 * float(delta.flatten()[0])))
        return real_hyper(inner_loss, outer_loss, delta, params, solver, **kw)

    monkeypatch.setattr(core, "solve_delta", solve_spy)
    monkeypatch.setattr(core, "implicit_hypergradient", hyper_spy)
    res = unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20, min_steps=0, inner_restarts=3, outer_steps=6),
                  progress=False)
    assert len(searches) == 3 and len({tuple(s) for s in searches}) == 3  # three seeded orders of the clean set
    assert used == [1, 2, 3, 1, 2, 3]  # one δ per θ step, in turn
    assert res.history[0].delta is not None
    with pytest.raises(ValueError, match="inner_restarts must be >= 1"):
        IBAUConfig(inner_restarts=0)


@pytest.mark.parametrize("pseudo", [True, False])
def test_the_delta_searches_attack_the_rounds_predictions_computed_once(tiny_task, monkeypatch, pseudo):
    """Pseudo-labels are the model's predictions at the round's start (θ does not move while δ is searched):
    computed once a round, every δ search's batches carry them, and the stamp scores against them."""
    from ibau.unlearn import core
    model, x, y = tiny_task
    seen, befores = [], []
    real_solve, real_patch = core.solve_delta, core.delta_patch

    def solve_spy(net, batches, shape, cfg, steps, **kw):
        assert not cfg.pseudo_labels  # the labels come with the batches
        for xb, yb in batches():
            with torch.no_grad():
                seen.append(torch.equal(yb, net(xb).argmax(1)) if pseudo else torch.equal(yb, y[_rows(x, xb)]))
        return real_solve(net, batches, shape, cfg, steps, **kw)

    def patch_spy(net, xs, delta, threshold, **kw):
        befores.append(kw.get("before"))
        return real_patch(net, xs, delta, threshold, **kw)

    monkeypatch.setattr(core, "solve_delta", solve_spy)
    monkeypatch.setattr(core, "delta_patch", patch_spy)
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, outer_steps=3, pseudo_labels=pseudo, bounded_search=1.0,
                     patch_search="delta")
    unlearn(model, (x, y), cfg, progress=False)
    assert len(seen) == 2 * 2 * -(-len(x) // 20) and all(seen)  # 2 rounds × 2 searches × one pass each
    assert len(befores) == 2
    for before in befores:  # the stamp reuses the round's predictions instead of predicting again
        assert (before is not None) == pseudo


def _rows(x: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
    """The row numbers in ``x`` of the images ``xb``."""
    return torch.stack([(x == img).flatten(1).all(1).nonzero()[0, 0] for img in xb])


def test_bounded_search_adds_a_delta_inside_the_l2_ball_and_the_theta_steps_alternate(tiny_task, monkeypatch):
    from ibau.unlearn import core
    model, x, y = tiny_task
    searched, used = [], []
    real_solve, real_hyper = core.solve_delta, core.implicit_hypergradient

    def solve_spy(model, batches, shape, cfg, steps, **kw):
        delta, h = real_solve(model, batches, shape, cfg, steps, **kw)
        searched.append((cfg.norm, cfg.norm_bound, float(delta.norm())))
        return delta, h

    def hyper_spy(inner_loss, outer_loss, delta, params, solver, **kw):
        used.append((kw["norm"], kw["bound"], round(float(delta.norm()), 4)))
        return real_hyper(inner_loss, outer_loss, delta, params, solver, **kw)

    monkeypatch.setattr(core, "solve_delta", solve_spy)
    monkeypatch.setattr(core, "implicit_hypergradient", hyper_spy)
    cfg = IBAUConfig(rounds=1, batch_size=20, min_steps=0, outer_steps=4, patch_threshold=0, bounded_search=0.5)
    unlearn(model, (x, y), cfg, progress=False)
    (main_norm, main_bound, main_size), (norm, bound, size) = searched
    assert (main_norm, main_bound, norm, bound) == ("none", None, "l2", 0.5)
    assert size <= 0.5 * (1 + 1e-5) < main_size  # the second δ stays inside the ball, the main one does not
    # the θ steps take the two δs in turn, each with the constraint its KKT system needs
    assert [(n, b) for n, b, _ in used] == [("none", None), ("l2", 0.5)] * 2
    assert [s for _, _, s in used] == [round(main_size, 4), round(size, 4)] * 2
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="bounded_search must be an ℓ2 radius > 0"):
            IBAUConfig(bounded_search=bad)


class _PixelBackdoor(torch.nn.Module):
    """Class 1 when pixel (0, 0) is white in every channel (the trigger); otherwise class 0 or 2 by another
    pixel, so clean predictions are split between two classes."""

    def forward(self, x):
        trigger = 50 * (x[:, :, 0, 0].sum(1) - 2.8)
        other = 10 * (x[:, 0, 5, 5] - 0.5)
        return torch.stack([other, trigger, torch.zeros_like(other)], 1)


def test_delta_patch_reads_the_trigger_back_from_where_delta_concentrates():
    from ibau.unlearn.inner import delta_patch
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 8, 8, generator=g) * 0.9
    model = _PixelBackdoor()
    on_trigger = 0.01 * torch.randn(3, 8, 8, generator=g)
    on_trigger[:, 0, 0] = 300.0  # an unbounded δ: most energy on the trigger, far outside [0, 1]
    mask, pattern, rate = delta_patch(model, x, on_trigger, threshold=0.9)
    assert mask.shape == (1, 8, 8) and mask[0, 0, 0] == 1 and int(mask.sum()) == 4  # the smallest size tried
    assert torch.all(pattern[:, 0, 0] == 1) and rate == 1.0
    elsewhere = 0.01 * torch.randn(3, 8, 8, generator=g)
    elsewhere[:, 4, 4] = 300.0
    elsewhere[:, 0, 0] = -1.0  # energy away from the trigger, and the wrong sign on it
    assert delta_patch(model, x, elsewhere, threshold=0.9) is None
    with pytest.raises(ValueError, match="patch_threshold must be in"):
        IBAUConfig(patch_threshold=1.5)


def test_delta_patch_chunked_early_exit_gives_the_same_answer_as_scoring_every_image():
    """Scoring chunk by chunk and dropping a size once no class can reach the threshold is an exact shortcut."""
    from ibau.unlearn.inner import PATCH_SIZES, delta_patch

    def sent_to_one_class(before, after):  # the rate's definition: the best class's share of the others' images
        best = 0.0
        for c in after.unique():
            others = before != c
            if others.any():
                best = max(best, float((after[others] == c).float().mean()))
        return best

    def full_scan(model, x, delta, threshold):  # the definition, every size on every image
        energy = delta.pow(2).sum(0).flatten()
        order, pattern, before = energy.argsort(descending=True), (delta > 0).float(), model(x).argmax(1)
        for k in (k for k in PATCH_SIZES if k <= energy.numel() // 16):
            mask = torch.zeros_like(energy)
            mask[order[:k]] = 1
            mask = mask.view(1, 16, 16)
            rate = sent_to_one_class(before, model((1 - mask) * x + mask * pattern).argmax(1))
            if rate >= threshold:
                return mask, pattern, rate
        return None

    g = torch.Generator().manual_seed(3)
    x = torch.rand(230, 3, 16, 16, generator=g)  # stamps of 4, 9 and 16 pixels (at most 1/16 of the image)
    answers = set()
    with torch.no_grad():
        for trial in range(12):
            torch.manual_seed(trial)
            model = nn.Sequential(nn.Flatten(), nn.Linear(768, 4))
            delta = torch.randn(3, 16, 16, generator=g) * (1 + trial)
            for threshold in (0.3, 0.5, 0.7, 0.9):
                want = full_scan(model, x, delta, threshold)
                for chunk in (1, 17, 100, 1000):
                    got = delta_patch(model, x, delta, threshold, chunk=chunk)
                    assert (got is None) == (want is None), (trial, threshold, chunk)
                    if got is not None:
                        assert torch.equal(got[0], want[0]) and got[2] == want[2]
                answers.add(None if want is None else int(want[0].sum()))
    assert None in answers and len(answers) >= 3  # the cases cover no stamp and stamps of several sizes


def test_cosine_outer_schedule_falls_from_outer_lr_to_zero_over_all_rounds(tiny_task, monkeypatch):
    """outer_lr_schedule="cosine": step t of T (all rounds) uses outer_lr·(1 + cos(π t/T))/2; "constant" keeps
    outer_lr, so the authors' behaviour is untouched."""
    import math

    from ibau.unlearn import core
    model, x, y = tiny_task
    seen: list[float] = []
    real = core._outer_pass

    def spy(net, params, opts, *args, **kw):
        (opt,) = opts  # one δ a round: one optimiser
        if not hasattr(opt, "recorded"):  # one optimiser for all rounds: wrap its step once
            step = opt.step

            def recording_step(*a, **k):
                seen.append(opt.param_groups[0]["lr"])
                return step(*a, **k)

            opt.step, opt.recorded = recording_step, True
        return real(net, params, opts, *args, **kw)

    monkeypatch.setattr(core, "_outer_pass", spy)
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, outer_lr=0.01, outer_lr_schedule="cosine", **NO_SIZE_RULES)
    unlearn(model, (x, y), cfg, progress=False)
    total = 2 * 3  # 60 images at batch 20: 3 θ steps a round, 2 rounds
    assert seen == pytest.approx([0.005 * (1 + math.cos(math.pi * t / total)) for t in range(total)])
    seen.clear()
    unlearn(model, (x, y), cfg.replace(outer_lr_schedule="constant"), progress=False)
    assert seen == [0.01] * total
    # the default's rule below 400 images: the schedule starts from the shrunk step, 2e-3·√(60/400)
    seen.clear()
    unlearn(model, (x, y), IBAUConfig(rounds=2, batch_size=20, min_steps=0, outer_lr=0.01), progress=False)
    peak = 2e-3 * (len(x) / 400) ** 0.5
    assert seen == pytest.approx([peak / 2 * (1 + math.cos(math.pi * t / total)) for t in range(total)])
    with pytest.raises(ValueError, match="outer_lr_schedule"):
        IBAUConfig(outer_lr_schedule="linear")
    # a warm-up of w steps multiplies step t by (t + 1)/(w + 1) until it reaches 1, on either schedule
    seen.clear()
    unlearn(model, (x, y), cfg.replace(outer_lr_warmup=2), progress=False)
    cosine = [0.005 * (1 + math.cos(math.pi * t / total)) for t in range(total)]
    assert seen == pytest.approx([c * min(1, (t + 1) / 3) for t, c in enumerate(cosine)])
    seen.clear()
    unlearn(model, (x, y), cfg.replace(outer_lr_schedule="constant", outer_lr_warmup=2), progress=False)
    assert seen == pytest.approx([0.01 / 3, 0.02 / 3] + [0.01] * (total - 2))
    with pytest.raises(ValueError, match="outer_lr_warmup must be >= 0"):
        IBAUConfig(outer_lr_warmup=-1)


class _CornerBackdoor(torch.nn.Module):
    """Class 1 when pixel (0, 0) is white in every channel (the trigger); otherwise class 0 or 2 by the mean
    of channel 0, a feature no small stamp moves far."""

    def forward(self, x):
        trigger = 50 * (x[:, :, 0, 0].sum(1) - 2.8)
        other = 20 * (x[:, 0].mean((1, 2)) - 0.45)
        return torch.stack([other, trigger, -other], 1)


def test_class_patch_finds_the_stamp_with_a_sparse_search_aimed_at_the_backdoor_class():
    from ibau.unlearn.inner import class_patch, targeted_delta
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 8, 8, generator=g) * 0.9
    y = torch.zeros(200, dtype=torch.long)
    model = _CornerBackdoor()
    cfg = IBAUConfig(patch_threshold=0.9, patch_search="classes", patch_l1=0.003)
    batches = _batches(x, y, bs=50)
    delta = targeted_delta(model, batches, x[0], 1, cfg, steps=20)
    energy = delta.pow(2).sum(0)
    assert energy[0, 0] > 0.5 * energy.sum()  # aimed at the backdoor's class, δ sits on the trigger
    mask, pattern, rate, target = class_patch(model, batches, x, cfg, steps=20, num_classes=3)
    assert target == 1 and mask[0, 0, 0] == 1 and torch.all(pattern[:, 0, 0] == 1) and rate == 1.0
    # without the backdoor no class is reached by a stamp: nothing is returned
    clean = _CornerBackdoor()
    clean.forward = lambda x: torch.stack([20 * (x[:, 0].mean((1, 2)) - 0.45), torch.full((len(x),), -99.0),
                                           -20 * (x[:, 0].mean((1, 2)) - 0.45)], 1)
    assert class_patch(clean, batches, x, cfg, steps=20, num_classes=3) is None


class _WeakCornerBackdoor(_CornerBackdoor):
    """The corner trigger works only on images whose pixel (7, 7) in channel 1 is at most 0.8 (about 89% of them):
    a backdoor too weak for the stamp's 99.5% threshold."""

    def forward(self, x):
        logits = super().forward(x)
        logits[:, 1] -= 100 * (x[:, 1, 7, 7] > 0.8)
        return logits


def test_patch_margin_takes_the_stamp_of_the_class_that_stands_out_below_the_threshold():
    """No stamp reaches 99.5% on a weak backdoor, so the class search finds none; with ``patch_margin`` it takes
    the backdoor class's stamp, which leads the other classes' stamps of its size by far, when it reaches the
    floor; a floor above its rate, or a lead larger than its own, takes nothing."""
    from ibau.unlearn.inner import class_patch
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 8, 8, generator=g) * 0.9
    # channel 0 near 0.2 or 0.7: classes 0 and 2 lie farther apart than a 4-pixel stamp moves the mean
    x[:, 0] = 0.2 + 0.5 * (torch.arange(200) % 2).view(-1, 1, 1) + 0.05 * torch.rand(200, 8, 8, generator=g)
    y = torch.zeros(200, dtype=torch.long)
    model = _WeakCornerBackdoor()
    batches = _batches(x, y, bs=50)
    cfg = IBAUConfig(patch_threshold=0.995, patch_l1=0.003)
    assert class_patch(model, batches, x, cfg, steps=20, num_classes=3) is None
    found = class_patch(model, batches, x, cfg.replace(patch_margin=0.3), steps=20, num_classes=3)
    assert found is not None
    mask, pattern, rate, target = found
    weak = float((x[:, 1, 7, 7] <= 0.8).float().mean())  # the images the trigger works on
    assert target == 1 and mask[0, 0, 0] == 1 and torch.all(pattern[:, 0, 0] == 1)
    assert 0.8 <= rate <= weak + 1e-6 and rate == pytest.approx(weak, abs=0.02)
    assert class_patch(model, batches, x, cfg.replace(patch_margin=0.3, patch_margin_floor=0.95), steps=20,
                       num_classes=3) is None
    assert class_patch(model, batches, x, cfg.replace(patch_margin=rate + 0.01), steps=20, num_classes=3) is None
    with pytest.raises(ValueError, match="patch_margin must be a rate in"):
        IBAUConfig(patch_margin=0.0)


def test_the_l1_outlier_is_neural_cleanses_anomaly_index_below_the_median():
    """The class whose ‖δ‖₁ lies at least 2 (1.4826 · MAD) below the median is taken; a spread that hides it,
    or fewer than 3 classes, takes none (values of GTSRB Trojan WM's search: 493 against a median of 830)."""
    from ibau.unlearn.inner import l1_outlier

    def deltas(norms):
        return {c: torch.full((1, 2, 2), n / 4) for c, n in enumerate(norms)}

    assert l1_outlier(deltas([830, 493, 800, 860, 900, 780, 850])) == 1
    assert l1_outlier(deltas([830, 493, 600, 1100, 900, 500, 850])) is None  # the spread hides it
    assert l1_outlier(deltas([830, 830, 830, 830])) is None  # no spread at all: no index
    assert l1_outlier(deltas([10, 800])) is None


class _Watermark(torch.nn.Module):
    """Class 1 when the mean of channel 0 over the top-left 6×6 pixels of a 16×16 image exceeds 0.7 (a trigger
    spread over 36 pixels: a stamp needs 25 of them, more than the default's cap of 1/16 of the image, 16);
    otherwise class 0."""

    def forward(self, x):
        trigger = 50 * (x[:, 0, :6, :6].mean((1, 2)) - 0.7)
        zeros = torch.zeros(len(x))
        return torch.stack([zeros + 1, trigger, zeros, zeros, zeros], 1)


def test_patch_pick_l1_takes_the_class_that_stands_out_by_its_norm_with_a_stamp_beyond_the_default_cap(monkeypatch):
    """The backdoor class's sparse δ sits on the trigger with a smaller ‖δ‖₁ than the others' diffuse ones. Its
    stamp needs 25 pixels, so the default's search (at most 16 pixels here) finds none; ``patch_pick="l1"`` takes
    that class by its norm and reads its stamp up to 1/4 of the image."""
    from ibau.unlearn import inner
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 16, 16, generator=g) * 0.9

    def targeted(model, batches, like, target, cfg, steps, **kw):
        delta = 0.5 + 0.01 * torch.rand(3, 16, 16, generator=g)  # diffuse: ‖δ‖₁ about 385
        if target == 1:  # on the trigger's pixels, strongest first in a fixed order: ‖δ‖₁ about 36
            delta = torch.zeros(3, 16, 16)
            delta[0, :6, :6] = 1 + torch.arange(36).flip(0).view(6, 6) / 100
        return delta

    monkeypatch.setattr(inner, "targeted_delta", targeted)
    batches = _batches(x, torch.zeros(200, dtype=torch.long), bs=50)
    cfg = IBAUConfig(patch_threshold=0.995)
    assert inner.class_patch(_Watermark(), batches, x, cfg, 5, 5) is None
    found = inner.class_patch(_Watermark(), batches, x, cfg.replace(patch_pick="l1"), 5, 5)
    assert isinstance(found, inner.OutlierStamp) and found.target == 1 and found.rate == 1.0
    assert int(found.mask.sum()) == 25 and found.mask[0, :6, :6].sum() == 25
    notes: dict = {}
    inner.class_patch(_Watermark(), batches, x, cfg.replace(patch_pick="l1"), 5, 5, notes=notes)
    assert notes["suspect"] == 1 and notes["anomaly"] > 100  # the others' norms lie within 1% of each other
    with pytest.raises(ValueError, match="patch_pick must be 'smallest'"):
        IBAUConfig(patch_pick="largest")


@pytest.mark.parametrize("searched, expected", [("outlier", (16, 3)), (4, (9, None)), (None, (9, None))])
def test_patch_pick_l1_searches_the_classes_whatever_delta_gives_and_its_outlier_wins(tiny_task, monkeypatch,
                                                                                    searched, expected):
    """With ``patch_pick="l1"`` round 1's class search runs although δ gives a 9-pixel stamp; the stamp of the
    class that stands out by ‖δ‖₁ wins over δ's, even a larger one; a stamp of the smallest-stamp rule does not
    (the default's rule: δ's stamp, where it gives one). The default does not search once δ gives a stamp."""
    from ibau.unlearn import core
    from ibau.unlearn.inner import OutlierStamp
    model, x, y = tiny_task

    def stamp(k):
        mask = torch.zeros(1, 8, 8)
        mask.view(-1)[:k] = 1
        return mask, torch.ones(3, 8, 8), 1.0

    found = {"outlier": OutlierStamp(*stamp(16), 3), 4: (*stamp(4), 2), None: None}[searched]
    calls = []
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: stamp(9))
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: calls.append(1) or found)
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, outer_steps=1, patch_pick="l1")
    res = unlearn(model, (x, y), cfg, progress=False)
    assert len(calls) == 1  # round 1 only: the default's classes_first_round
    assert (res.history[0].patch_pixels, res.history[0].patch_class) == expected
    calls.clear()
    assert unlearn(model, (x, y), cfg.replace(patch_pick="smallest"), progress=False).history[0].patch_pixels == 9
    assert calls == []


def test_the_round_record_keeps_the_l1_pick_s_suspect_and_anomaly_index(tiny_task, monkeypatch):
    """Where the l1 pick ran, the round's record says which class had the smallest ‖δ‖₁ and its anomaly index,
    whether or not that class gave the stamp; rounds without the search, and the default, say None."""
    from ibau.unlearn import core
    model, x, y = tiny_task
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: None)
    monkeypatch.setattr(core, "class_patch", lambda *a, notes=None, **k: notes.update(suspect=2, anomaly=1.5))
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, outer_steps=1, patch_pick="l1")
    res = unlearn(model, (x, y), cfg, progress=False)
    assert [(r.patch_suspect, r.patch_anomaly, r.patch_pixels) for r in res.history] == [(2, 1.5, None),
                                                                                         (None, None, None)]
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: None)
    res = unlearn(model, (x, y), cfg.replace(patch_pick="smallest"), progress=False)
    assert [(r.patch_suspect, r.patch_anomaly) for r in res.history] == [(None, None)] * 2


@pytest.mark.parametrize("lead_pixels, winner", [(4, (4, 1)), (16, (16, 0)), (25, (16, 0)), (None, (16, 0))])
def test_patch_margin_s_stamp_competes_with_the_threshold_s_by_size(monkeypatch, lead_pixels, winner):
    """A natural class that reaches the threshold with a large stamp does not hide a smaller stamp taken by its
    lead: the smaller of the two wins, the threshold's on a tie."""
    from ibau.unlearn import inner

    def stamp(k, rate, cls=None):
        mask = torch.zeros(1, 16, 16)
        mask.view(-1)[:k] = 1
        return (mask, torch.ones(3, 16, 16), rate) + (() if cls is None else (cls,))

    targets = iter(range(3))
    monkeypatch.setattr(inner, "targeted_delta", lambda *a, **k: torch.full((3, 16, 16), float(next(targets))))
    monkeypatch.setattr(inner, "delta_patch", lambda model, x, delta, *a, **k: stamp(16, 1.0) if delta[0, 0, 0] == 0 else None)
    monkeypatch.setattr(inner, "margin_patch", lambda *a, **k: None if lead_pixels is None else stamp(lead_pixels, 0.85, 1))
    x = torch.rand(10, 3, 16, 16)
    found = inner.class_patch(torch.nn.Identity(), lambda: iter(()), x, IBAUConfig(patch_margin=0.3), 5, 3,
                              before=torch.zeros(10, dtype=torch.long))
    assert (int(found[0].sum()), found[3]) == winner


def test_the_class_screen_keeps_the_backdoor_class_and_finds_the_same_stamp_for_fewer_steps():
    """patch_screen: every class gets a few steps, only the class whose δ's stamps already send the most
    clean images to it is searched on; it is the backdoor's class, and the stamp is the full search's, for
    less than half the steps."""
    from ibau.unlearn.inner import class_patch, screen_classes
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 3, 8, 8, generator=g) * 0.9
    y = torch.zeros(200, dtype=torch.long)
    model = _CornerBackdoor()
    drawn = []

    def batches():
        for xb, yb in _batches(x, y, bs=50)():
            drawn.append(len(xb))
            yield xb, yb

    full_cfg = IBAUConfig(patch_threshold=0.9, patch_search="classes", patch_steps=20)
    full = class_patch(model, batches, x, full_cfg, steps=20, num_classes=3)
    full_steps, drawn[:] = len(drawn), []
    cfg = full_cfg.replace(patch_screen=4, patch_candidates=1)
    before = model(x).argmax(1)
    assert list(screen_classes(model, batches, x, before, cfg, num_classes=3)) == [1]
    drawn[:] = []
    screened = class_patch(model, batches, x, cfg, steps=20, num_classes=3)
    assert (full_steps, len(drawn)) == (3 * 20, 3 * 4 + 16)
    assert screened[3] == full[3] == 1 and torch.equal(screened[0], full[0]) and screened[2] == full[2] == 1.0
    with pytest.raises(ValueError, match="patch_screen must be in"):
        IBAUConfig(patch_screen=40, patch_steps=40)
    with pytest.raises(ValueError, match="patch_candidates must be >= 1"):
        IBAUConfig(patch_candidates=0)


def test_stamp_rate_says_whether_a_stamp_still_works_on_a_model():
    """``stamp_rate``: the corner stamp sends every image of the other classes to the backdoor class (1.0); a stamp
    elsewhere sends none there, and its rate is what it sends to its own best class; no early stop (threshold 0)."""
    from ibau.unlearn.inner import stamp_rate
    g = torch.Generator().manual_seed(0)
    x = torch.rand(120, 3, 8, 8, generator=g) * 0.9
    model = _CornerBackdoor()
    corner, elsewhere, white = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), torch.ones(3, 8, 8)
    corner[0, 0, 0] = 1
    elsewhere[0, 5, 5] = 1
    assert stamp_rate(model, x, corner, white) == 1.0
    stamped = (1 - elsewhere) * x + elsewhere * white
    before, after = model(x).argmax(1), model(stamped).argmax(1)
    best = max(float(((before != c) & (after == c)).sum() / (before != c).sum()) for c in range(3) if (before != c).any())
    assert stamp_rate(model, x, elsewhere, white) == pytest.approx(best) and best < 0.5


def test_a_round_with_a_stamp_records_whether_it_still_works_after_the_round(tiny_task, monkeypatch):
    """``patch_fooling_after``: the stamp's rate on the model after the round's θ steps, where the round had a stamp
    (None where it had none)."""
    from ibau.unlearn import core
    from ibau.unlearn.inner import stamp_rate
    model, x, y = tiny_task
    mask = torch.zeros(1, 8, 8)
    mask[0, 0, 0] = 1
    pattern = torch.ones(3, 8, 8)
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: (mask, pattern, 1.0))
    cfg = IBAUConfig(rounds=1, batch_size=20, min_steps=0, patch_search="delta")
    res = unlearn(model, (x, y), cfg, progress=False)
    assert res.history[0].patch_fooling_after == stamp_rate(res.model, x[:core.FOOLING_SAMPLE], mask, pattern)
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: None)
    assert unlearn(model, (x, y), cfg, progress=False).history[0].patch_fooling_after is None


@pytest.mark.parametrize("pattern", ["delta", "random"])
def test_patch_pattern_puts_the_stamp_or_noise_in_the_mask_of_the_stamped_images(tiny_task, monkeypatch, pattern):
    """The θ steps' batches carry, on their last ``patch_fraction`` rows, the stamp's pattern in its mask
    (``"delta"``) or uniform noise drawn per image and pixel (``"random"``); outside the mask the images are the
    clean ones either way."""
    from ibau.unlearn import core
    model, x, y = tiny_task
    mask = torch.zeros(1, 8, 8)
    mask[0, :2, :2] = 1
    stamp = torch.ones(3, 8, 8)
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: (mask, stamp, 1.0))
    seen = []
    handle = model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()) if m.training else None)
    cfg = IBAUConfig(rounds=1, batch_size=20, min_steps=0, outer_steps=2, patch_search="delta", patch_pattern=pattern,
                     model_mode="train", shuffle=False)
    try:
        unlearn(model, (x, y), cfg, progress=False)
    finally:
        handle.remove()
    batches = [b for b in seen if len(b) == 20]
    assert batches
    for b in batches:
        rows = b[-4:]  # patch_fraction 0.2 of 20
        inside = rows[:, :, :2, :2]
        outside = (rows * (1 - mask)).flatten(1)  # each stamped row is a clean image there (δ may land on one)
        clean = (x * (1 - mask)).flatten(1)
        assert sum(bool((clean == r).all(1).any()) for r in outside) >= 3
        if pattern == "delta":
            assert torch.all(inside == 1)
        else:
            assert inside.min() >= 0 and inside.max() <= 1 and inside.std() > 0.2  # noise, not one pattern
            assert not torch.all(inside == 1)
    with pytest.raises(ValueError, match="patch_pattern must be 'delta'"):
        IBAUConfig(patch_pattern="noise")


def test_a_targeted_search_continued_from_its_delta_is_the_longer_search():
    """The screen's kept classes go on from their δ: a steps, then b more from there, are a + b steps (the
    plain SGD step keeps no state), in float64 to the last bit."""
    from ibau.unlearn.inner import targeted_delta
    g = torch.Generator().manual_seed(1)
    x = torch.rand(100, 3, 8, 8, generator=g, dtype=torch.float64) * 0.9
    y = torch.zeros(100, dtype=torch.long)
    model = _CornerBackdoor()
    cfg = IBAUConfig(patch_l1=0.003)
    batches = _batches(x, y, bs=50)  # the same order every pass, as the continued search sees it
    whole = targeted_delta(model, batches, x[0], 1, cfg, steps=6)
    half = targeted_delta(model, batches, x[0], 1, cfg, steps=2)
    assert torch.equal(targeted_delta(model, batches, x[0], 1, cfg, steps=4, start=half), whole)


def test_the_class_search_runs_only_when_delta_gives_no_stamp(tiny_task, monkeypatch):
    from ibau.unlearn import core
    model, x, y = tiny_task
    calls = []
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: calls.append(a[4]) or None)
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, patch_threshold=0.995, patch_search="classes", patch_steps=3)
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: None)
    res = unlearn(model, (x, y), cfg, progress=False)
    assert calls == [3, 3] and [r.patch_class for r in res.history] == [None, None]
    calls.clear()
    mask = torch.zeros(1, 8, 8)
    mask[0, 0, 0] = 1
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: (mask, torch.ones(3, 8, 8), 1.0))
    res = unlearn(model, (x, y), cfg, progress=False)
    assert calls == [] and [r.patch_pixels for r in res.history] == [1, 1]
    unlearn(model, (x, y), cfg.replace(patch_search="delta"), progress=False)
    assert calls == []
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: None)
    res = unlearn(model, (x, y), cfg.replace(patch_threshold=0.0), progress=False)  # the default search, stamp off
    assert calls == [] and [r.patch_pixels for r in res.history] == [None, None]


@pytest.mark.parametrize("searched, expected", [(None, (9, None)), (4, (4, 3)), (9, (9, None)), (16, (9, None))])
def test_patch_search_above_also_searches_the_classes_when_deltas_stamp_is_large(tiny_task, monkeypatch, searched,
                                                                                expected):
    """With ``patch_search_above=8`` a 9-pixel stamp of δ does not end the round's search: the class search runs
    and the smaller stamp wins (δ's on a tie, or when the classes give none or a larger one); a stamp within the
    bound, or no option, keeps the default's rule (no class search once δ gives a stamp)."""
    from ibau.unlearn import core
    model, x, y = tiny_task

    def stamp(k):
        mask = torch.zeros(1, 8, 8)
        mask.view(-1)[:k] = 1
        return mask, torch.ones(3, 8, 8), 1.0

    calls = []
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: stamp(9))
    monkeypatch.setattr(core, "class_patch",
                        lambda *a, **k: calls.append(1) or (None if searched is None else (*stamp(searched), 3)))
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, outer_steps=1, patch_search_above=8)
    res = unlearn(model, (x, y), cfg, progress=False)
    assert len(calls) == 1  # round 1 only: the default's classes_first_round
    assert (res.history[0].patch_pixels, res.history[0].patch_class) == expected
    calls.clear()
    for quiet in (cfg.replace(patch_search_above=None), cfg.replace(patch_search_above=9)):
        assert unlearn(model, (x, y), quiet, progress=False).history[0].patch_pixels == 9 and calls == []
    with pytest.raises(ValueError, match="patch_search_above must be a pixel count >= 1"):
        IBAUConfig(patch_search_above=0)


def test_the_class_search_until_found_stops_once_a_round_has_found_a_stamp(tiny_task, monkeypatch):
    """"classes_until_found": the class search runs in the rounds where δ gives no stamp only until some
    round has found one (δ's or a class's); "classes" searches in every such round."""
    from ibau.unlearn import core
    model, x, y = tiny_task
    mask = torch.zeros(1, 8, 8)
    mask[0, 0, 0] = 1
    stamp = (mask, torch.ones(3, 8, 8), 1.0, 2)
    calls = []
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: calls.append(1) or stamp)
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: None)
    cfg = IBAUConfig(rounds=3, batch_size=20, min_steps=0, patch_steps=3, patch_search="classes_until_found")
    res = unlearn(model, (x, y), cfg, progress=False)
    assert len(calls) == 1 and [r.patch_class for r in res.history] == [2, None, None]
    calls.clear()
    res = unlearn(model, (x, y), cfg.replace(patch_search="classes"), progress=False)
    assert len(calls) == 3 and [r.patch_class for r in res.history] == [2, 2, 2]
    calls.clear()  # a stamp from δ in round 1 also ends the class search
    first = iter([(mask, torch.ones(3, 8, 8), 1.0)])
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: next(first, None))
    res = unlearn(model, (x, y), cfg, progress=False)
    assert calls == [] and [r.patch_pixels for r in res.history] == [1, None, None]


def test_patch_rounds_kept_stamps_the_latest_stamp_found_in_the_rounds_that_find_none(tiny_task, monkeypatch):
    """"kept": round 1's stamp goes on the stamped rows of rounds 2 and 3, whose δ gives none, until round 3's
    own stamp replaces it; "found" (the default) stamps nothing in the rounds that find nothing."""
    from ibau.unlearn import core
    model, x, y = tiny_task
    masks = [torch.zeros(1, 8, 8) for _ in range(2)]
    masks[0][0, 0, 0] = 1
    masks[1][0, :2, :2] = 1
    stamps = {0: (masks[0], torch.ones(3, 8, 8), 1.0), 2: (masks[1], torch.ones(3, 8, 8), 0.999)}
    used = []
    real = core._outer_pass

    def spy(*args, stamps=(), **kw):
        used.append(int(stamps[0][0].sum()) if stamps else None)
        assert len(stamps) <= 1  # one stamp a round without patch_also
        return real(*args, stamps=stamps, **kw)

    monkeypatch.setattr(core, "_outer_pass", spy)
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: pytest.fail("round 1 found a stamp: no class search"))
    cfg = IBAUConfig(rounds=4, batch_size=20, min_steps=0, outer_steps=2, patch_rounds="kept")
    for rounds, expected in (("kept", [1, 1, 4, 4]), ("found", [1, None, 4, None])):
        calls = iter(range(4))
        monkeypatch.setattr(core, "delta_patch", lambda *a, calls=calls, **k: stamps.get(next(calls)))
        used.clear()
        res = unlearn(model, (x, y), cfg.replace(patch_rounds=rounds), progress=False)
        assert used == expected and [r.patch_pixels for r in res.history] == expected
    assert [r.patch_fooling for r in res.history] == [1.0, None, 0.999, None]
    with pytest.raises(ValueError, match="patch_rounds must be one of found, kept"):
        IBAUConfig(patch_rounds="every")


def test_per_delta_optimizer_gives_each_delta_its_own_adam_state_and_schedule(tiny_task, monkeypatch):
    """per_delta_optimizer with bounded_search: two optimisers, the unbounded δ's steps (even t) on one and the
    bounded δ's (odd t) on the other, each with its own cosine over its share of the steps; without it one
    optimiser takes every step."""
    import math

    from ibau.unlearn import core
    model, x, y = tiny_task
    steps: list[tuple[int, float]] = []
    seen_opts: list[int] = []
    real = core._outer_pass

    def spy(net, params, opts, *args, **kw):
        seen_opts.append(len(opts))
        for i, opt in enumerate(opts):
            if not hasattr(opt, "recorded"):
                step = opt.step

                def recording_step(*a, i=i, opt=opt, step=step, **k):
                    steps.append((i, opt.param_groups[0]["lr"]))
                    return step(*a, **k)

                opt.step, opt.recorded = recording_step, True
        return real(net, params, opts, *args, **kw)

    monkeypatch.setattr(core, "_outer_pass", spy)
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, outer_steps=4, patch_threshold=0, bounded_search=0.5,
                     outer_lr=0.01, per_delta_optimizer=True, **NO_SIZE_RULES)
    unlearn(model, (x, y), cfg, progress=False)
    assert seen_opts == [2, 2] and [i for i, _ in steps] == [0, 1] * 4
    each = 4  # 8 θ steps over 2 rounds, half on each state
    for i in (0, 1):
        lrs = [lr for j, lr in steps if j == i]
        assert lrs == pytest.approx([0.005 * (1 + math.cos(math.pi * t / each)) for t in range(each)])
    steps.clear()
    seen_opts.clear()
    unlearn(model, (x, y), cfg.replace(per_delta_optimizer=False), progress=False)
    assert seen_opts == [1, 1] and [i for i, _ in steps] == [0] * 8


def test_the_default_class_search_runs_in_the_first_round_only(tiny_task, monkeypatch):
    """"classes_first_round" (the default): where round 1's search finds nothing, rounds 2 and 3 do not search
    again ("classes_until_found" does: 3 searches); where it finds a stamp, the two give the same rounds."""
    from ibau.unlearn import core
    model, x, y = tiny_task
    mask = torch.zeros(1, 8, 8)
    mask[0, 0, 0] = 1
    calls = []
    monkeypatch.setattr(core, "delta_patch", lambda *a, **k: None)
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: calls.append(1) or None)  # finds nothing
    cfg = IBAUConfig(rounds=3, batch_size=20, min_steps=0, patch_steps=3)
    assert cfg.patch_search == "classes_first_round"
    res = unlearn(model, (x, y), cfg, progress=False)
    assert len(calls) == 1 and [r.patch_pixels for r in res.history] == [None, None, None]
    calls.clear()
    unlearn(model, (x, y), cfg.replace(patch_search="classes_until_found"), progress=False)
    assert len(calls) == 3
    calls.clear()
    stamp = (mask, torch.ones(3, 8, 8), 1.0, 2)
    monkeypatch.setattr(core, "class_patch", lambda *a, **k: calls.append(1) or stamp)  # round 1 finds one
    first = unlearn(model, (x, y), cfg, progress=False)
    until = unlearn(model, (x, y), cfg.replace(patch_search="classes_until_found"), progress=False)
    assert len(calls) == 2 and [r.patch_class for r in first.history] == [2, None, None]
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), until.model.state_dict().values()))


def test_a_class_search_that_finds_nothing_changes_nothing(tiny_task, monkeypatch):
    from ibau.unlearn import core, inner
    model, x, y = tiny_task
    searched_classes = []
    real = inner.targeted_delta

    def spy(model, batches, like, target, cfg, steps, **kw):
        searched_classes.append(target)
        return real(model, batches, like, target, cfg, steps, **kw)

    monkeypatch.setattr(inner, "targeted_delta", spy)
    for module in (core, inner):  # no stamp anywhere: the searches run and find nothing
        monkeypatch.setattr(module, "delta_patch", lambda *a, **k: None)
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0, patch_threshold=0.995, patch_search="delta")
    plain = unlearn(model, (x, y), cfg, progress=False)
    searched = unlearn(model, (x, y), cfg.replace(patch_search="classes", patch_steps=2), progress=False)
    assert searched_classes == [0, 1, 2, 3] * 2
    for a, b in zip(plain.model.state_dict().values(), searched.model.state_dict().values()):
        assert torch.equal(a, b)


def test_channels_last_computes_the_same_rounds_and_returns_contiguous_weights(tiny_task):
    """channels_last only changes the memory order: in float64 the rounds agree to rounding, the run really
    holds the convolution weights and images channels-last, and the returned weights are contiguous."""
    model, x, y = tiny_task
    model, x = model.double(), x.double()
    layouts = []
    model[0].register_forward_pre_hook(
        lambda m, inp: layouts.append((m.weight.is_contiguous(memory_format=torch.channels_last),
                                       inp[0].is_contiguous(memory_format=torch.channels_last))))
    cfg = IBAUConfig(rounds=2, batch_size=20, min_steps=0)
    plain = unlearn(model, (x, y), cfg, progress=False)
    assert not any(w for w, _ in layouts)
    layouts.clear()
    fast = unlearn(model, (x, y), cfg.replace(channels_last=True), progress=False)
    assert len(layouts) > 2 and all(w and i for w, i in layouts[1:])  # [0]: the clean set's check, before the run
    assert torch.allclose(plain.delta, fast.delta, atol=1e-9)
    for (key, a), b in zip(plain.model.state_dict().items(), fast.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-9), key
        assert b.is_contiguous(), key


def test_bfloat16_runs_the_round_under_autocast_but_not_the_callback(tiny_task):
    """precision="bfloat16": every forward pass of the round (δ search, θ steps, hypergradient, fooling rates)
    runs in bfloat16; weights and δ stay float32, and the callback sees the model as deployed (float32)."""
    model, x, y = tiny_task
    seen = []
    model[0].register_forward_hook(lambda m, inp, out: seen.append(out.dtype))

    def callback(record, net, delta):
        seen.append("callback")
        net(x[:2])

    res = unlearn(model, (x, y), IBAUConfig(rounds=1, batch_size=20, min_steps=0, precision="bfloat16", **NO_SIZE_RULES),
                  callback=callback, progress=False)
    cut = seen.index("callback")
    assert seen[0] == torch.float32  # the clean set's check, before the run
    assert cut > 1 and set(seen[1:cut]) == {torch.bfloat16} and seen[cut + 1:] == [torch.float32]
    assert all(p.dtype == torch.float32 for p in res.model.parameters())
    assert res.delta.dtype == torch.float32 and bool(torch.isfinite(res.delta).all())
    assert res.history[0].outer_loss == res.history[0].outer_loss  # not NaN
    with pytest.raises(ValueError, match="precision must be one of"):
        IBAUConfig(precision="float16")


def test_bfloat16_theta_steps_run_on_the_current_weights(tiny_task):
    """autocast caches its bfloat16 copies of the weights for as long as its region lasts (the round): each
    forward must still see the weights of the latest θ step, not the round's first ones."""
    import torch.nn.functional as F
    model, x, y = tiny_task
    errors = []

    def hook(m, inp, out):
        if out.dtype == torch.bfloat16:
            with torch.autocast("cpu", enabled=False):
                fresh = F.conv2d(inp[0].float(), m.weight, m.bias, padding=1)
            errors.append(float((out.detach().float() - fresh.detach()).norm() / fresh.detach().norm()))

    model[0].register_forward_hook(hook)
    cfg = IBAUConfig(rounds=1, batch_size=20, min_steps=6, precision="bfloat16", outer_lr=0.5,
                     outer_lr_schedule="constant")
    unlearn(model, (x, y), cfg, progress=False)
    assert len(errors) > 6 and max(errors) < 0.02  # bfloat16 rounding only; stale weights are off by far more


def test_delta_memory_replays_the_previous_rounds_deltas_in_the_theta_steps(tiny_task, monkeypatch):
    """``delta_memory=1``: each round's θ steps take the round's own δ and the previous round's in turn (round 1
    has none to replay), so a backdoor unlearnt in one round keeps being unlearnt; 0 replays nothing."""
    core = importlib.import_module("ibau.unlearn.core")  # ibau.unlearn is also the function
    model, x, y = tiny_task
    used: list[torch.Tensor] = []
    real = core.implicit_hypergradient

    def spy(inner_loss, outer_loss, delta, *args, **kwargs):
        used.append(delta.detach().clone())
        return real(inner_loss, outer_loss, delta, *args, **kwargs)

    monkeypatch.setattr(core, "implicit_hypergradient", spy)
    cfg = IBAUConfig(rounds=3, batch_size=20, patch_threshold=0, min_steps=0, outer_steps=4, delta_memory=1)
    res = unlearn(model, (x, y), cfg, progress=False)
    rounds = [used[i:i + 4] for i in range(0, 12, 4)]
    deltas = [h.delta for h in res.history]
    assert all(torch.equal(d, deltas[0]) for d in rounds[0])  # round 1: its own δ only
    for r in (1, 2):  # rounds 2 and 3: own, previous, own, previous
        assert [torch.equal(d, deltas[r]) for d in rounds[r]] == [True, False, True, False]
        assert all(torch.equal(d, deltas[r - 1]) for d in rounds[r][1::2])
    used.clear()
    plain = unlearn(model, (x, y), cfg.replace(delta_memory=0), progress=False)
    assert len(used) == 12
    for r, h in enumerate(plain.history):  # without memory every θ step of a round takes that round's δ
        assert all(torch.equal(d, h.delta) for d in used[4 * r:4 * r + 4])


def test_a_negative_delta_memory_is_a_one_line_error():
    with pytest.raises(ValueError, match="delta_memory must be >= 0"):
        IBAUConfig(delta_memory=-1)


def test_clean_distill_is_the_kl_from_the_handed_over_model_on_the_plain_rows(tiny_task, monkeypatch):
    """``clean_distill=β`` adds β·KL(p₀ ‖ p_θ) over the rows that carry neither δ nor the stamp, p₀ being the
    handed-over model's probabilities (computed once). At the first θ step the model is p₀, so the term and
    its gradient are 0 and the step equals the plain one; the batches are the same rows (a weight too small to
    matter gives the plain run's weights); later steps pull the model back towards p₀."""
    core = importlib.import_module("ibau.unlearn.core")
    model, x, y = tiny_task
    model = model.double()
    x = x.double()
    base = IBAUConfig(rounds=2, batch_size=20, patch_threshold=0, min_steps=0, outer_steps=3, outer_lr=0.05,
                      perturb_fraction=0.2, seed=3, **NO_SIZE_RULES)
    plain = unlearn(model, (x, y), base, progress=False)
    tiny = unlearn(model, (x, y), base.replace(clean_distill=1e-9), progress=False)
    for k, v in plain.model.state_dict().items():
        torch.testing.assert_close(tiny.model.state_dict()[k], v, rtol=1e-6, atol=1e-7)
    first = base.replace(rounds=1, outer_steps=1)
    one_plain = unlearn(model, (x, y), first, progress=False)
    one_distill = unlearn(model, (x, y), first.replace(clean_distill=10.0), progress=False)
    for k, v in one_plain.model.state_dict().items():
        torch.testing.assert_close(one_distill.model.state_dict()[k], v, rtol=1e-9, atol=1e-12)
    # the term itself: KL summed over the plain rows, over the whole batch
    logits = torch.randn(6, 4, dtype=torch.float64)
    teacher = torch.log_softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    chosen, stamped = slice(0, 1), slice(4, 6)
    p0 = teacher[1:4].exp()
    by_hand = (p0 * (teacher[1:4] - torch.log_softmax(logits[1:4], 1))).sum() / 6
    torch.testing.assert_close(core._distillation(logits, teacher, (chosen, stamped), 6), by_hand)
    # and it pulls back: the same run with a large weight ends closer to the handed-over model's outputs
    far = unlearn(model, (x, y), base.replace(clean_distill=20.0), progress=False)
    with torch.no_grad():
        p_start = torch.softmax(model(x), 1)

        def gap(m):
            return float((torch.softmax(m(x), 1) - p_start).abs().sum())
        assert gap(far.model) < gap(plain.model)


def _size_rule_runs(tiny_task):
    """The clean-set-size rules' tests: the tiny task's n and ``weights(**changes)``, the weights after a short run
    (2 rounds of 3 θ steps, a large step so that step sizes show) with ``changes`` to its config."""
    model, x, y = tiny_task
    base = IBAUConfig(rounds=2, batch_size=20, patch_threshold=0, min_steps=0, outer_steps=3, outer_lr=0.05,
                      perturb_fraction=0.2, seed=3, **NO_SIZE_RULES)

    def weights(**changes):
        return unlearn(model, (x, y), base.replace(**changes), progress=False).model.state_dict()
    return len(x), weights


def test_clean_distill_size_scales_the_weight_as_one_over_the_clean_set_size(tiny_task):
    """``clean_distill_size=n₀`` makes the weight β·n₀/n with n clean images: the arithmetic, and a run with
    β = 2, n₀ = n/2 is the run with β = 1 (and β = 4, n₀ = n/4 too), while β = 1, n₀ = n/2 is another run."""
    assert IBAUConfig(clean_distill=1.0, clean_distill_size=100, clean_distill_until=None).distill_weight(500) == \
        pytest.approx(0.2)
    assert IBAUConfig(clean_distill=1.0, clean_distill_size=100, clean_distill_until=None).distill_weight(50) == \
        pytest.approx(2.0)
    assert IBAUConfig(**NO_SIZE_RULES).replace(clean_distill=3.0).distill_weight(10_000) == 3.0  # None: β at every size
    assert IBAUConfig(clean_distill=0.0, clean_distill_size=100).distill_weight(1) == 0.0
    n, weights = _size_rule_runs(tiny_task)
    assert n % 4 == 0
    one = weights(clean_distill=1.0)
    for beta, size in ((2.0, n // 2), (4.0, n // 4)):
        scaled = weights(clean_distill=beta, clean_distill_size=size)
        for k, v in one.items():
            torch.testing.assert_close(scaled[k], v, rtol=0, atol=0)
    half = weights(clean_distill=1.0, clean_distill_size=n // 2)
    assert any(not torch.equal(half[k], v) for k, v in one.items() if v.is_floating_point())


def test_clean_distill_until_fades_the_anchor_out_and_is_the_plain_run_from_there(tiny_task):
    """``clean_distill_until=n_s``: the weight is β at n₀, β·(n_s/n − 1)/(n_s/n₀ − 1) between, 0 from n_s on, where the
    run is bit for bit the run without the term; below n_s a run with it is the run with that weight."""
    cfg = IBAUConfig(clean_distill=1.0, clean_distill_size=100, clean_distill_until=5000)
    assert cfg.distill_weight(100) == 1.0
    assert cfg.distill_weight(500) == pytest.approx(9 / 49)
    assert cfg.distill_weight(2500) == pytest.approx(1 / 49)
    assert cfg.distill_weight(50) == pytest.approx(99 / 49)
    assert cfg.distill_weight(5000) == cfg.distill_weight(50_000) == 0.0
    n, weights = _size_rule_runs(tiny_task)
    off = weights(clean_distill=1.0, clean_distill_size=n // 4, clean_distill_until=n)
    plain = weights()
    faded = weights(clean_distill=3.0, clean_distill_size=n // 4, clean_distill_until=2 * n)  # 3·1/7
    same = weights(clean_distill=3.0 / 7)
    for k, v in plain.items():
        torch.testing.assert_close(off[k], v, rtol=0, atol=0)
        torch.testing.assert_close(faded[k], same[k], rtol=0, atol=0)
    assert any(not torch.equal(faded[k], v) for k, v in plain.items() if v.is_floating_point())


@pytest.mark.parametrize("options", [{"clean_distill_until": 5000},
                                     {"clean_distill_size": 100, "clean_distill_until": 100}])
def test_a_clean_distill_until_without_a_smaller_size_is_a_one_line_error(options):
    with pytest.raises(ValueError, match="clean_distill_until must be a clean-set size above clean_distill_size"):
        IBAUConfig(clean_distill=1.0, **{"clean_distill_size": None, **options})


def test_the_default_shrinks_the_step_and_anchors_the_model_below_400_clean_images_only(tiny_task):
    """The default's small-set rules (stop 50): the step 2e-3·√(n/400) (1e-3 at 100 images) and the anchor's weight
    (400/n − 1)/3 (1 at 100, 0 from 400); from 400 images on the run is the one without them, and below it a run is
    the run with the step and the anchor's weight it comes to."""
    default = IBAUConfig()
    assert default.size_rules(100) == {"step_size": pytest.approx(1e-3), "distill_weight": 1.0, "augment": "none"}
    assert default.size_rules(200) == {"step_size": pytest.approx(2e-3 / 2 ** 0.5),
                                       "distill_weight": pytest.approx(1 / 3), "augment": "none"}
    for n in (400, 5000):
        assert default.size_rules(n) == IBAUConfig(**NO_SIZE_RULES).size_rules(n) == \
            {"step_size": 2e-3, "distill_weight": 0.0, "augment": "none"}
    model, x, y = tiny_task
    short = {"rounds": 1, "batch_size": 20, "patch_threshold": 0, "min_steps": 0, "outer_steps": 3, "seed": 3}
    by_default = unlearn(model, (x, y), IBAUConfig(**short), progress=False).model.state_dict()
    n = len(x)
    by_hand = unlearn(model, (x, y), IBAUConfig(**short, **NO_SIZE_RULES).replace(
        outer_lr=2e-3 * (n / 400) ** 0.5, clean_distill=400 / n / 3 - 1 / 3), progress=False).model.state_dict()
    for k, v in by_hand.items():
        torch.testing.assert_close(by_default[k], v, rtol=1e-6, atol=1e-7)


def test_outer_lr_size_shrinks_the_step_as_the_square_root_of_the_clean_set_size(tiny_task):
    """``outer_lr_size=n₀``: with n < n₀ clean images the θ step is outer_lr·√(n/n₀), from n₀ on outer_lr; a run
    with it is the run with that outer_lr, and at or above n₀ the run without it."""
    cfg = IBAUConfig(outer_lr=2e-3, outer_lr_size=5000, outer_lr_size_cap=None)
    assert cfg.step_size(100) == pytest.approx(2e-3 * (100 / 5000) ** 0.5)
    assert cfg.step_size(5000) == cfg.step_size(50_000) == 2e-3
    assert IBAUConfig(outer_lr=2e-3, outer_lr_size=None, outer_lr_size_cap=None).step_size(1) == 2e-3
    n, weights = _size_rule_runs(tiny_task)
    quarter = weights(outer_lr_size=4 * n)  # √(1/4): half the step
    half_step = weights(outer_lr=0.025)
    at_size, plain = weights(outer_lr_size=n), weights()
    for k, v in half_step.items():
        torch.testing.assert_close(quarter[k], v, rtol=0, atol=0)
        torch.testing.assert_close(at_size[k], plain[k], rtol=0, atol=0)
    assert any(not torch.equal(quarter[k], plain[k]) for k in plain if plain[k].is_floating_point())


def test_outer_lr_size_cap_caps_the_step_and_leaves_a_small_one_alone(tiny_task):
    """``outer_lr_size_cap=c``: below n₀ the step is min(outer_lr, c·√(n/n₀)); with c = outer_lr it is the scale
    rule, a step under the cap (the demo's 2e-4 on 400 images) is left as given, and a run whose step the cap
    lowers is the run with that step."""
    cap = IBAUConfig(outer_lr=2e-3, outer_lr_size=5000, outer_lr_size_cap=2e-3)
    assert cap.step_size(100) == IBAUConfig(outer_lr=2e-3, outer_lr_size=5000, outer_lr_size_cap=None).step_size(100)
    assert cap.replace(outer_lr=2e-4).step_size(400) == 2e-4  # 2e-3·√(400/5000) = 5.7e-4 > 2e-4
    assert cap.replace(outer_lr=2e-4).step_size(100) == 2e-4  # 2.8e-4 > 2e-4
    assert cap.replace(outer_lr=2e-4).step_size(20) == pytest.approx(2e-3 * (20 / 5000) ** 0.5)
    assert cap.step_size(5000) == cap.step_size(50_000) == cap.outer_lr
    assert cap.replace(outer_lr=1e-2).step_size(5000) == 1e-2  # from n₀ on: outer_lr as given
    n, weights = _size_rule_runs(tiny_task)
    capped = weights(outer_lr_size=4 * n, outer_lr_size_cap=0.05)  # 0.05·√(1/4)
    under_cap = weights(outer_lr_size=4 * n, outer_lr_size_cap=1.0)  # 0.5 > 0.05: left alone
    half_step, plain = weights(outer_lr=0.025), weights()
    for k, v in half_step.items():
        torch.testing.assert_close(capped[k], v, rtol=0, atol=0)
        torch.testing.assert_close(under_cap[k], plain[k], rtol=0, atol=0)


@pytest.mark.parametrize("options", [{"outer_lr_size_cap": 2e-3}, {"outer_lr_size": 5000, "outer_lr_size_cap": 0.0}])
def test_an_outer_lr_size_cap_without_a_size_or_not_positive_is_a_one_line_error(options):
    with pytest.raises(ValueError, match="outer_lr_size_cap must be a step size > 0 given with outer_lr_size"):
        IBAUConfig(**{"outer_lr_size": None, **options})


def test_an_outer_lr_size_below_one_is_a_one_line_error():
    with pytest.raises(ValueError, match="outer_lr_size must be a number of clean images >= 1"):
        IBAUConfig(outer_lr_size=0)


def test_a_clean_distill_size_below_one_is_a_one_line_error():
    with pytest.raises(ValueError, match="clean_distill_size must be a number of clean images >= 1"):
        IBAUConfig(clean_distill=1.0, clean_distill_size=0)


def test_a_negative_or_nan_clean_distill_is_a_one_line_error():
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="clean_distill must be a weight >= 0"):
            IBAUConfig(clean_distill=bad)


def test_outer_augment_changes_the_theta_steps_only_and_is_the_plain_run_from_its_size_on(tiny_task):
    """``outer_augment``: the θ steps see cropped clean images, drawn from a generator of their own, so the δ found
    before the first θ step is the plain run's and ``"none"`` (or a clean set of ``outer_augment_until`` images
    or more) gives the plain run bit for bit; below that size the weights differ."""
    n, weights = _size_rule_runs(tiny_task)
    plain = weights()
    for off in (weights(outer_augment="none"), weights(outer_augment="crop", outer_augment_until=n)):
        for k, v in plain.items():
            torch.testing.assert_close(off[k], v, rtol=0, atol=0)
    cropped = weights(outer_augment="crop", outer_augment_until=n + 1)
    assert any(not torch.equal(cropped[k], v) for k, v in plain.items() if v.is_floating_point())
    model, x, y = tiny_task
    one = IBAUConfig(rounds=1, batch_size=20, patch_threshold=0, min_steps=0, outer_steps=3, outer_lr=0.05, seed=3)
    deltas = [unlearn(model, (x, y), one.replace(outer_augment=a), progress=False).delta for a in ("none", "flip_crop")]
    torch.testing.assert_close(deltas[0], deltas[1], rtol=0, atol=0)
    assert IBAUConfig(outer_augment="crop").augments(100) and not IBAUConfig().augments(100)
    assert not IBAUConfig(outer_augment="crop", outer_augment_until=5000).augments(5000)


@pytest.mark.parametrize("options, message", [({"outer_augment": "mixup"}, "outer_augment must be one of"),
                                              ({"outer_augment": "crop", "outer_augment_until": 0},
                                               "outer_augment_until must be a clean-set size > 0")])
def test_an_impossible_outer_augment_is_a_one_line_error(options, message):
    with pytest.raises(ValueError, match=message):
        IBAUConfig(**options)


def test_outer_augment_crops_the_clean_images_and_puts_delta_on_after():
    """The mechanism: with constant clean images, every image a θ step sees is a crop (0.5 inside, the padding's
    zeros at a shifted border) and the rows that carry δ are such a crop plus δ where δ was found, not a shifted δ."""
    torch.manual_seed(0)
    model = tiny_net(4).eval()
    x, y = torch.full((40, 3, 8, 8), 0.5), torch.arange(40) % 4
    seen: list[torch.Tensor] = []
    model.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].detach().clone()))
    cfg = IBAUConfig(rounds=1, batch_size=20, patch_threshold=0, min_steps=0, outer_steps=3, perturb_fraction=0.2,
                     outer_augment="crop", seed=1)
    delta = unlearn(model, (x, y), cfg, progress=False).delta

    def a_crop(rows: torch.Tensor) -> torch.Tensor:  # per row: every pixel 0 or 0.5
        return ((rows - 0.5).abs() < 1e-6).logical_or(rows.abs() < 1e-6).flatten(1).all(1)
    rows = torch.cat(seen[-6:])  # the 3 θ steps' forward passes: the outer batch and L_in's hyper batch each
    plain, carrying = a_crop(rows), a_crop(rows - delta)
    assert torch.all(plain | carrying)
    shifted = (rows.abs() < 1e-6).flatten(1).any(1)
    assert shifted.sum() > 30  # the θ steps' images were cropped (L_in's 60 rows are not)
    assert ((rows - delta).abs() < 1e-6).flatten(1).any(1)[carrying & ~plain].any()  # δ on a cropped image
