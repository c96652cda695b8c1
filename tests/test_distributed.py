"""Data-parallel I-BAU (issue 20 §1): two gloo ranks on the CPU compute what one process computes.

The ranks are spawned processes given torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), so
:func:`ibau.unlearn` initialises the process group itself, as under ``torchrun --nproc-per-node 2``.
"""
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ibau import IBAUConfig, unlearn
from ibau.unlearn.distributed import SINGLE, RankLostError, Ranks, timeout_seconds

#: Both sides run in float64. The ranks' parts are summed by the all-reduce in another order than one
#: process sums a batch, so the results differ by rounding only: measured at most 5e-16 on δ (|δ| ≈ 1-3)
#: and θ after 2 rounds. 1e-12 leaves that room to grow, while a term counted twice or a share left out
#: moves δ or θ by more than 1e-4.
ATOL = 1e-12
#: the process group's timeout in the ranks (IBAU_DIST_TIMEOUT)
TIMEOUT_S = 5

CONFIGS = {
    # the defaults (the stamp and the class search included) at a small batch
    "default": IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_steps=5),
    # the class search's screen: its stamps' rates are counted over the ranks' shares
    "screen": IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_steps=5, patch_screen=2, patch_candidates=2),
    # the distillation term (clean_distill): the handed-over model's log-probabilities predicted in shares,
    # the term's rows and its mean over the global batch
    "distill": IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_steps=5, clean_distill=1.0, perturb_fraction=0.2),
    # the smooth trigger search (smooth_search): each class's screen and rate counted over the ranks' shares,
    # its δ on the rows before the stamp's
    "smooth": IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_steps=5, smooth_search=2.0, smooth_screen=2),
    # the blended trigger search (blend_search): each class's pattern from gradients summed over the ranks, its
    # rate counted over their shares, the pattern blended into the rows before the stamp's
    "blend": IBAUConfig(rounds=2, batch_size=30, min_steps=0, patch_steps=5, blend_search=0.2, blend_screen=2),
    # the authors' data order (k images drawn at random per batch), δ on the ℓ2 sphere (the active set), MINRES
    "reference_l2": IBAUConfig.reference(rounds=2, batch_size=30, norm="l2", norm_bound=1.0, solver="minres",
                                         solver_iters=3),
}


class _Backdoored(nn.Module):
    """A small conv net plus a fixed detector that sends images with a white top-left corner to class 1, so
    that a stamp exists to be found."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ELU(), nn.MaxPool2d(2),
                                 nn.Flatten(), nn.Linear(4 * 8 * 8, 10))

    def forward(self, x):
        out = self.net(x)
        hit = 40 * (x[:, :, :2, :2].mean((1, 2, 3)) - 0.9)
        return out + F.pad(hit[:, None].clamp(min=0), (1, out.shape[1] - 2))


def _task():
    """90 digits (3×16×16) and the model, in float64."""
    from ibau.data import load_digits

    data = load_digits(16)
    rows = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))[:90]
    torch.manual_seed(0)
    return _Backdoored().double().eval(), data.images[rows].double(), data.labels[rows]


def _run(cfg: IBAUConfig, model=None):
    """unlearn on the task; returns the result and the number of image rows the model was given."""
    rows: list[int] = []
    task_model, x, y = _task()
    model = task_model if model is None else model
    model.register_forward_pre_hook(lambda module, inputs: rows.append(len(inputs[0])))
    return unlearn(model, (x, y), cfg, progress=False, inplace=True), sum(rows)


# --- what each rank runs ---------------------------------------------------------------------------------
def _same(rank: int) -> dict:
    """Both configs, then a clean set that differs between the ranks (refused on both). Rank 1 starts from
    other weights: every rank starts from rank 0's, as with DDP."""
    out = {}
    for name, cfg in CONFIGS.items():
        model = _task()[0]
        if rank == 1:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.1)
        res, rows = _run(cfg, model)
        out[name] = {"delta": res.delta, "state": res.model.state_dict(), "rows": rows,
                     "patches": [h.patch_pixels for h in res.history]}
    _, x, y = _task()
    try:
        unlearn(_task()[0], (x[rank:], y[rank:]), CONFIGS["default"], progress=False)
    except ValueError as exc:
        out["mismatch"] = str(exc)
    return out


def _dies(rank: int) -> dict:
    """Rank 1 dies at its 5th forward pass; rank 0 must fail with a clear error, not wait forever."""
    model, calls = _task()[0], []

    def die_at_the_fifth(module, inputs):
        calls.append(1)
        if len(calls) == 5:
            os._exit(3)

    if rank == 1:
        model.register_forward_pre_hook(die_at_the_fifth)
    start = time.perf_counter()
    try:
        _run(CONFIGS["default"], model)
    except RankLostError as exc:
        return {"error": str(exc), "seconds": time.perf_counter() - start}
    return {"error": None}


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    """One rank, with the environment torchrun would give it: the runs of :func:`_same`, saved, then
    :func:`_dies` (the same processes: starting them costs more than the runs)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world), IBAU_DIST_TIMEOUT=str(TIMEOUT_S))
    torch.set_num_threads(1)
    torch.save(_same(rank), Path(out) / f"same{rank}.pt")
    torch.save(_dies(rank), Path(out) / f"dies{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Two spawned ranks run :func:`_rank_main`; their exit codes, wall time and saved results by name."""
    out, world, wait = tmp_path_factory.mktemp("ranks"), 2, 240.0
    ctx = mp.get_context("spawn")
    port = _free_port()
    start = time.monotonic()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(out))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(max(0.0, start + wait - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    for p in hung:  # only these test's own processes
        p.kill()
        p.join()
    assert not hung, f"{len(hung)} rank(s) still running after {wait:.0f} s: a hang"
    saved = {f.stem: torch.load(f, weights_only=False) for f in out.glob("*.pt")}
    return [p.exitcode for p in procs], time.monotonic() - start, saved


# --- the tests ---------------------------------------------------------------------------------------------
def test_two_gloo_ranks_end_with_the_delta_and_theta_of_one_process(two_ranks, one_thread):
    _, _, saved = two_ranks
    r0, r1 = saved["same0"], saved["same1"]
    for name, cfg in CONFIGS.items():
        one, rows = _run(cfg)
        for rank in (r0, r1):
            torch.testing.assert_close(rank[name]["delta"], one.delta, rtol=0, atol=ATOL, msg=name)
            for key, value in one.model.state_dict().items():
                torch.testing.assert_close(rank[name]["state"][key], value, rtol=0, atol=ATOL, msg=f"{name} {key}")
        assert r0[name]["patches"] == [h.patch_pixels for h in one.history]
        # each rank's model saw about half the images, together all of them once (plus one image each for
        # the shape check at the start)
        assert 0.45 < r0[name]["rows"] / rows < 0.55 and 0.45 < r1[name]["rows"] / rows < 0.55
        assert r0[name]["rows"] + r1[name]["rows"] == rows + 1
    # the cases are not vacuous: a stamp was found and unlearned; δ ended on the ℓ2 sphere
    assert any(p is not None for p in r0["default"]["patches"]) and r0["screen"]["patches"][0] is not None
    assert abs(float(r0["reference_l2"]["delta"].norm()) - 1.0) < 1e-9
    for rank in (r0, r1):
        assert "the clean set differs between ranks" in rank["mismatch"]


def test_a_rank_that_dies_fails_the_run_with_a_clear_message(two_ranks):
    codes, _, saved = two_ranks
    assert codes == [0, 3] and "dies1" not in saved  # rank 1 died; rank 0 finished
    error = saved["dies0"]["error"]
    assert error is not None and error.startswith("rank 0 of 2: an all-reduce of I-BAU failed, another rank died or "
                                                  "stalled past the 5 s timeout (IBAU_DIST_TIMEOUT sets it): ")
    assert "\n" not in error and len(error) < 300
    assert saved["dies0"]["seconds"] < TIMEOUT_S + 10  # failed at once or at the timeout, not a hang


def test_one_process_is_the_identity():
    """Without a process group nothing is sharded or summed: the single-process path is unchanged."""
    x = torch.arange(10.0)
    assert SINGLE.shard(x) is x and SINGLE.local_rows(slice(0, 3), 10, x.device) == slice(0, 3)
    (same,) = SINGLE.all_reduce_sum(x)
    assert same is x and SINGLE.any_rank(True) and not SINGLE.any_rank(False)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.equal(SINGLE.cross_entropy(logits, labels, 99), F.cross_entropy(logits, labels))


def test_shares_and_rows_of_a_global_batch():
    """Rank r of N takes rows r, r + N, ...; the global rows chosen by a slice or a draw map to its own."""
    x = torch.arange(10)
    first, second = Ranks(0, 2), Ranks(1, 2)
    assert first.shard(x).tolist() == [0, 2, 4, 6, 8] and second.shard(x).tolist() == [1, 3, 5, 7, 9]
    assert first.local_rows(slice(0, 3), 10, x.device).tolist() == [0, 1]  # global rows 0 and 2
    assert second.local_rows(torch.tensor([9, 2, 5, 4]), 10, x.device).tolist() == [4, 2]  # rows 9, 5, in order
    logits, labels = torch.randn(10, 4, dtype=torch.float64), torch.arange(10) % 4
    parts = [r.cross_entropy(r.shard(logits), r.shard(labels), 10) for r in (first, second)]
    torch.testing.assert_close(parts[0] + parts[1], F.cross_entropy(logits, labels), rtol=0, atol=1e-15)


def test_an_empty_share_still_reaches_delta_and_theta():
    """A batch with fewer images than ranks: the rank without one joins with zero terms, and a model that
    rejects 0-row inputs never sees one."""
    class Viewing(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

        def forward(self, x):
            return self.fc(x.view(x.size(0), -1))

    model, delta = Viewing(), torch.zeros(3, 2, 2, requires_grad=True)
    logits = Ranks(1, 2).forward(model, torch.zeros(0, 3, 2, 2) + delta)
    assert logits.shape == (0, 3)
    grads = torch.autograd.grad(F.cross_entropy(logits, torch.zeros(0, dtype=torch.long), reduction="sum"),
                                [delta, *model.parameters()])
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)


def test_the_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("IBAU_DIST_TIMEOUT", "7.5")
    assert timeout_seconds() == 7.5
    monkeypatch.setenv("IBAU_DIST_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="IBAU_DIST_TIMEOUT must be a number of seconds > 0"):
        timeout_seconds()
