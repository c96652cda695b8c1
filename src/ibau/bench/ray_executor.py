"""``ibau bench --executor ray``: every job of the grid is a Ray task.

Each train and defend job runs as one task that reserves its resources (``num_cpus``, ``num_gpus``). A task
that reads a model (a defense, or a trigger optimised against the clean reference model) takes the ObjectRef
of the task that trains it as an argument, so Ray starts it once that model exists: no polling, and no phases.
A task runs the job function the local executor runs, which writes the job's record atomically into the bench
folder, so the records (and the report built from them) are the local executor's; that folder must be one
path every worker can reach (a shared file system on a cluster).

Faults: a worker that dies mid-job makes Ray run the job again (``max_retries``; an interrupted training
resumes from its last epoch); a job that raises one of the errors a job records is an error record, as
locally, and is not retried (``retry_exceptions=False``); a re-run after the driver died skips the jobs
whose record exists. Ray is imported only here, and only when this executor is used (``pip install 'ibau[ray]'``).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .grid import Context, Task

logger = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ValueError("--executor ray needs Ray, which is not installed: pip install 'ibau[ray]'") from None
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Every job a Ray task on the cluster at ``address`` (None: Ray's default, which is ``RAY_ADDRESS``, a
    cluster started on this machine with ``ray start``, or else a new local instance; ``"auto"``: an existing
    cluster only). A job reserves ``cpus_per_job`` CPUs (and runs that many torch threads, at least one) and
    ``gpus_per_job`` GPUs; a job whose worker dies is run again up to ``max_retries`` times."""

    address: str | None = None
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.cpus_per_job <= 0:
            raise ValueError(f"--cpus-per-job must be > 0, got {self.cpus_per_job:g}")
        if self.gpus_per_job < 0:
            raise ValueError(f"--gpus-per-job must be >= 0, got {self.gpus_per_job:g}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        import_ray()  # a missing Ray is an error now, before anything is written

    @classmethod
    def for_device(cls, address: str | None = None, cpus_per_job: float | None = None, gpus_per_job: float | None = None,
                   device: str | None = None) -> RayExecutor:
        """The executor for ``--device``: by default one CPU a job, and one GPU a job when the device is CUDA
        (Ray hides every GPU from a task that reserves none, so CUDA with no GPU a job is an error)."""
        cuda = device is not None and device.startswith("cuda")
        gpus = (1.0 if cuda else 0.0) if gpus_per_job is None else gpus_per_job
        if cuda and gpus == 0:
            raise ValueError(f"--device {device} under Ray needs --gpus-per-job > 0: a task that reserves no GPU sees none")
        return cls(address, 1.0 if cpus_per_job is None else cpus_per_job, gpus)

    def context(self, out: Path, data_dir: str | None, device: str | None) -> Context:
        """Absolute paths (a worker's working directory is not the driver's), and the threads a job reserved, so
        a job computes the same numbers wherever it runs."""
        data = str(Path(data_dir).resolve()) if data_dir is not None and Path(data_dir).exists() else data_dir
        return Context(str(Path(out).resolve()), data, device, max(1, int(self.cpus_per_job)))

    def run(self, phases: list[list[Task]]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Submit every task at once (each after the tasks it needs), then ``(job id, record)`` as each ends."""
        ray = import_ray()
        started = _connect(ray, self.address)
        try:
            refs = self._submit(ray, [task for phase in phases for task in phase])
            yield from _as_completed(ray, refs, self.max_retries)
        finally:
            if started:  # a Ray instance this run joined or started is left when it ends (its tasks end with it)
                ray.shutdown()

    def _submit(self, ray: Any, tasks: list[Task]) -> dict[str, Any]:
        """One Ray task a job, in phase order so that a job's dependencies are submitted before it."""
        remote = ray.remote(_run_job)
        refs: dict[str, Any] = {}
        for task in tasks:
            after = [refs[i] for i in task.after if i in refs]  # a model already recorded is no dependency
            options = remote.options(name=task.id, num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                                     max_retries=self.max_retries, retry_exceptions=False)
            refs[task.id] = options.remote(task.fn, task.args, *after)
        return refs


def _run_job(fn: Callable[..., dict[str, Any]], args: tuple[Any, ...], *after: dict[str, Any]) -> dict[str, Any]:
    """A job on a Ray worker. ``after`` holds the records of the jobs it needs: Ray resolves them before the
    call, which is what orders the tasks; the job itself reads their models from the bench folder."""
    return fn(*args)


def _connect(ray: Any, address: str | None) -> bool:
    """Join Ray unless this process already has (a caller's ``ray.init``); True when this call joined."""
    if ray.is_initialized():
        if address is not None:
            logger.warning(f"Ray is already initialised in this process; --address {address} is not used")
        return False
    try:
        ray.init(address=address, include_dashboard=False)
    except ConnectionError as e:
        raise ValueError(f"no Ray cluster at --address {address}: {e} (start one with `ray start --head`, "
                         "or leave --address out for a local instance)") from None
    return True


def _as_completed(ray: Any, refs: dict[str, Any], retries: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(job id, record)`` for each task as it ends. A job that raised an error its job function does not
    record raises here, as it does locally; a job whose worker died more than ``retries`` times is lost."""
    pending = {ref: job_id for job_id, ref in refs.items()}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            job_id = pending.pop(ref)
            try:
                record = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
                raise RuntimeError(f"{job_id}: its worker died {retries + 1} times ({type(e).__name__}); "
                                   "run `ibau bench` again to resume") from e
            yield job_id, record
