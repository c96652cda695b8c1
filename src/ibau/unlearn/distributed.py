"""Data-parallel I-BAU over ``torch.distributed``: which rows each rank takes, and the sums across ranks.

Under ``torchrun --nproc-per-node N`` (or in any process group the caller has initialised) every rank calls
:func:`ibau.unlearn` with the *same* clean set and the same config. Each global batch is drawn on every
rank from the same seeded generator, so all ranks agree on it; each rank then keeps every N-th row of it
(:meth:`Ranks.shard`: rank r takes rows r, r + N, ...), so every prefix of a batch, the hyper batch and
the images that carry δ are split evenly too. Losses are written as ``Σ_local / global batch size``, so the
sum of the ranks' gradients is the single process's mean; δ's gradient, the hypergradient's vectors and
θ's gradient are summed with :meth:`Ranks.all_reduce_sum` before they are used, and counts (fooling and
stamp rates) likewise, so every rank takes the same decisions and holds the same δ and θ.

With one process :data:`SINGLE` makes every method the identity: the single-process path is unchanged.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..utils import eval_mode

logger = logging.getLogger(__name__)

#: environment variable: seconds a rank waits for the others in one collective before the run fails
TIMEOUT_ENV = "IBAU_DIST_TIMEOUT"
#: its default (NCCL's own default; gloo's is 30 minutes)
DEFAULT_TIMEOUT_S = 600.0
#: ``"seconds"``: the timeout of the process group this module initialised (absent: none, or the caller's own)
_own_group_timeout: dict[str, float] = {}


class RankLostError(RuntimeError):
    """A collective failed: another rank died, or stalled past the process group's timeout."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes.

    ``comm_device`` is where collectives run (CUDA for NCCL, the CPU for gloo); ``timeout_s`` is the
    process group's timeout when ibau created the group (None: the caller's group, timeout unknown).
    """

    rank: int = 0
    world: int = 1
    comm_device: str = "cpu"
    timeout_s: float | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files, logs and shows progress, and adds δ-only penalty terms."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch: every ``world``-th row from row ``rank`` (all of it alone)."""
        return batch if self.world == 1 else batch[self.rank::self.world]

    def local_rows(self, positions: slice | torch.Tensor, n: int, device: torch.device) -> slice | torch.Tensor:
        """The rows of this rank's shard that are the global rows ``positions`` (a slice or an index tensor
        into a global batch of ``n`` rows), in the order given, as indices on ``device``; ``positions``
        itself with one process."""
        if self.world == 1:
            return positions
        index = positions.cpu() if isinstance(positions, torch.Tensor) else torch.arange(n)[positions]
        return (index[index % self.world == self.rank] // self.world).to(device)

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """``model(inputs)`` on this rank's share. An empty share (a global batch with fewer rows than ranks)
        gives 0 rows of logits that still depend on δ and θ, so the rank joins every collective with zero
        terms; the model then runs, in eval mode, on one stand-in row, since some models reject a 0-row
        input (``x.view(len(x), -1)``) and train-mode BatchNorm must not count it."""
        if len(inputs) or self.world == 1:
            return model(inputs)
        stand_in = inputs.new_zeros((1, *inputs.shape[1:])) + inputs.sum()  # 0, in δ's graph
        with eval_mode(model):
            return model(stand_in)[:0]

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor, total: int) -> torch.Tensor:
        """This rank's part of the mean cross-entropy over a global batch of ``total`` images: the sum over
        its rows / ``total`` (the plain mean with one process, so that path is bit for bit the same)."""
        if self.world == 1:
            return F.cross_entropy(logits, labels)
        return F.cross_entropy(logits, labels, reduction="sum") / total

    def all_reduce_sum(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The sums of ``tensors`` over the ranks (one collective per dtype); the tensors themselves with
        one process. The results keep each input's device and shape."""
        if self.world == 1:
            return list(tensors)
        return self._packed(tensors, lambda flat: dist.all_reduce(flat, op=dist.ReduceOp.SUM), "an all-reduce")

    def from_main(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Rank 0's values of ``tensors`` on every rank (the tensors themselves with one process)."""
        if self.world == 1:
            return list(tensors)
        return self._packed(tensors, lambda flat: dist.broadcast(flat, src=0), "a broadcast")

    def _packed(self, tensors: Sequence[torch.Tensor], collective, what: str) -> list[torch.Tensor]:
        """Run ``collective`` in place on the tensors packed flat, one call per dtype; unpacked results."""
        out = list(tensors)
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            picked = [i for i, t in enumerate(tensors) if t.dtype == dtype]
            flat = torch.cat([tensors[i].detach().reshape(-1).to(self.comm_device) for i in picked])
            self._collective(lambda flat=flat: collective(flat), what)
            for i, part in zip(picked, flat.split([tensors[i].numel() for i in picked])):
                out[i] = part.view_as(tensors[i]).to(tensors[i].device)
        return out

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (``flag`` itself with one process): a decision all ranks share."""
        if self.world == 1:
            return flag
        (total,) = self.all_reduce_sum(torch.tensor([int(flag)]))
        return bool(total.item() > 0)

    def share_model(self, model: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers, as DDP does when it wraps a model, so that the
        ranks start from one model even if each built its own; nothing with one process."""
        if self.world == 1:
            return
        tensors = [*model.parameters(), *model.buffers()]
        with torch.no_grad():
            for t, first in zip(tensors, self.from_main(*tensors)):
                t.copy_(first)

    def average_buffers(self, model: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm's running statistics) over the ranks and give the
        others (its batch counts) rank 0's values, which never has an empty share, so that every rank
        keeps the same model after train-mode steps on its own rows; nothing with one process."""
        if self.world == 1:
            return
        floats = [b for b in model.buffers() if b.is_floating_point()]
        others = [b for b in model.buffers() if not b.is_floating_point()]
        with torch.no_grad():
            for b, total in zip(floats, self.all_reduce_sum(*floats)):
                b.copy_(total / self.world)
            for b, first in zip(others, self.from_main(*others)):
                b.copy_(first)

    def check_same(self, tensors: Sequence[torch.Tensor], what: str) -> None:
        """Raise on every rank if ``tensors`` differ between ranks (compared by sizes and float64 sums)."""
        if self.world == 1:
            return
        mine = torch.tensor([float(t.numel()) for t in tensors] + [float(t.double().sum()) for t in tensors]
                            + [float(t.double().pow(2).sum()) for t in tensors], dtype=torch.float64, device=self.comm_device)
        (first,) = self.from_main(mine)
        # float sums may round differently with other thread counts: compared to a relative 1e-9
        if self.any_rank(not torch.allclose(first, mine, rtol=1e-9, atol=0.0)):
            raise ValueError(f"{what} differs between ranks; give every rank the same one (ibau shards it itself)")

    def _collective(self, run, what: str) -> None:
        """Run one collective; a failure (a peer gone, a timeout) becomes one clear line."""
        try:
            run()
        except torch.OutOfMemoryError:
            raise  # this rank's own trouble, not another rank's
        except RuntimeError as exc:  # gloo and NCCL report a lost peer or a timeout as RuntimeError subclasses
            waited = f"the {self.timeout_s:g} s timeout ({TIMEOUT_ENV} sets it)" if self.timeout_s else \
                "the process group's timeout"
            raise RankLostError(f"rank {self.rank} of {self.world}: {what} of I-BAU failed, another rank died or "
                                f"stalled past {waited}: {_first_line(exc)}") from exc


#: one process: every method of :class:`Ranks` is the identity
SINGLE = Ranks()


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
    except ValueError:
        return False


def is_main_process() -> bool:
    """Rank 0 of the process group, else of torchrun's environment; True in a plain single process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return not launched_by_torchrun() or int(os.environ["RANK"]) == 0


def local_device(device: torch.device) -> torch.device:
    """Under torchrun a bare ``cuda`` means this node's GPU ``LOCAL_RANK``, so ranks do not share GPU 0."""
    if launched_by_torchrun() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def timeout_seconds() -> float:
    """The collective timeout from ``IBAU_DIST_TIMEOUT`` (seconds), default :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return value


def connect(device: torch.device) -> Ranks:
    """The data-parallel context of a run on ``device``: the caller's process group when one is initialised,
    else one initialised here from torchrun's environment (NCCL on CUDA, gloo on the CPU, with the timeout
    of :func:`timeout_seconds`), else :data:`SINGLE`."""
    if not dist.is_available():
        return SINGLE
    if not dist.is_initialized():
        if not launched_by_torchrun():
            return SINGLE
        _init_from_env(device, timeout_seconds())
    world = dist.get_world_size()
    if world == 1:
        return SINGLE
    backend = str(dist.get_backend()).lower()  # "nccl", "gloo", or both ("cpu:gloo,cuda:nccl")
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"the process group uses NCCL, which reduces CUDA tensors only, but I-BAU runs on {device}; "
                         "run on cuda or initialise a gloo group")
    comm = str(device) if device.type == "cuda" and "nccl" in backend else "cpu"
    return Ranks(dist.get_rank(), world, comm, _own_group_timeout.get("seconds"))


def _init_from_env(device: torch.device, timeout: float) -> None:
    """Initialise the default process group from torchrun's variables; destroyed when the program exits."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL binds each rank to the GPU current when it first communicates
    try:
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    except RuntimeError as exc:
        raise RankLostError(f"rank {os.environ.get('RANK')}: could not join the other ranks of torchrun "
                            f"({backend}, {timeout:g} s timeout, {TIMEOUT_ENV} sets it): {_first_line(exc)}") from exc
    logger.debug("joined a %s process group: rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
    _own_group_timeout["seconds"] = timeout  # later runs in this process reuse the group and report its timeout
    atexit.register(_destroy)


def _first_line(exc: BaseException) -> str:
    """The first line of a backend's error, without its source location (``[.../pair.cc:545] ...``)."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line)[:160]


def _destroy() -> None:
    """Tear down the process group :func:`_init_from_env` made (at exit: NCCL warns about one left alive)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    _own_group_timeout.clear()
