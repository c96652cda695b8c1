"""`ibau bench --executor ray` (issue 20 §2): the same records as the local executor, a killed worker loses no
job, a job that raises is an error record, a re-run skips finished jobs; the option errors need no Ray.

The grids are a small cut of the one_trigger smoke grid (its first two attacks × its two cheapest defenses, the
same jobs and ids as in the full grid), on a local Ray instance with 2 CPUs: CI has 2 cores and no cluster.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from ibau.bench import PRESETS, SUITES, Suite, build_report
from ibau.bench.grid import LocalExecutor, bench_plan, make_executor, record_path, run_plan
from ibau.cli import main
from ibau.records import read_record, write_record

#: Fields that legitimately differ between two runs of the same job: how long it took (``seconds``, the defense's
#: own ``defense_seconds``, ``time_to_effect`` and each history entry's ``seconds`` are wall-clock times) and the
#: machine's load when it ended (``load``). Everything else (metrics, history, DER, config, spec, environment:
#: versions and torch threads) must be equal, exactly.
RUN_SPECIFIC = ("seconds", "defense_seconds", "time_to_effect", "load")
HISTORY_RUN_SPECIFIC = ("seconds",)


def _small_suite(attacks: int = 2) -> Suite:
    one = SUITES["one_trigger"]
    return dataclasses.replace(one, name="ray_smoke", attacks=one.attacks[:attacks]).only(["fine_pruning", "finetune"])


def _comparable(record: dict) -> dict:
    kept = {k: v for k, v in record.items() if k not in RUN_SPECIFIC}
    if "history" in kept:
        kept["history"] = [{k: v for k, v in h.items() if k not in HISTORY_RUN_SPECIFIC} for h in kept["history"]]
    return kept


def _records(out: Path) -> dict[str, dict]:
    return {p.name: read_record(p) for p in sorted((out / "records").glob("*.json"))}


def _cli(*args: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 0


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the file (about 10 s to start); the executor joins it and leaves it running."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The small grid with the local executor, in this process, with one torch thread: the thread count Ray's
    jobs get (``--cpus-per-job 1``), since the thread count can change the last bits of a float sum."""
    import torch

    out = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        counts = run_plan(bench_plan(_small_suite(), "smoke"), out, device="cpu", executor=LocalExecutor(1))
    finally:
        torch.set_num_threads(threads)
    assert counts == {"done": 0, "ran": 6, "errors": 0}
    return out


@pytest.mark.slow
def test_ray_records_and_report_equal_the_local_executors(ray_instance, local_run, tmp_path):
    suite = tmp_path / "ray_smoke.json"
    suite.write_text(json.dumps(dataclasses.asdict(_small_suite())))
    out = tmp_path / "ray"
    _cli("bench", "--suite", str(suite), "--preset", "smoke", "--out", str(out), "--device", "cpu",
         "--executor", "ray", "--no-report")
    local, on_ray = _records(local_run), _records(out)
    assert sorted(on_ray) == sorted(local) and len(local) == 6
    for name, record in local.items():
        assert record["status"] == "ok" and _comparable(on_ray[name]) == _comparable(record), name
    build_report(local_run), build_report(out)
    assert (out / "report" / "ray_smoke.md").read_text() == (local_run / "report" / "ray_smoke.md").read_text()
    # a re-run (after a driver was killed, say) runs nothing: every job has its record
    counts = run_plan(bench_plan(_small_suite(), "smoke"), out, device="cpu", executor=make_executor("ray"))
    assert counts == {"done": 6, "ran": 0, "errors": 0}


def _ray_workers_running(prefix: str) -> list[int]:
    """Pids of this process's Ray workers whose title names a running job starting with ``prefix``: a Ray worker
    sets its process title to ``ray::<task name>`` and the executor names each task after its job (Linux /proc)."""
    parents, titles = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                titles[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):  # the process ended while being read
                continue

    def ours(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return [pid for pid, title in titles.items() if title.startswith(f"ray::{prefix}") and ours(pid)]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_a_killed_worker_loses_no_job(ray_instance, tmp_path):
    out = tmp_path / "killed"
    plan = bench_plan(_small_suite(attacks=1), "smoke")  # one model, two defenses
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(run_plan(plan, out, device="cpu", executor=make_executor("ray"))))
    runner.start()
    deadline, killed = time.monotonic() + 120, None
    while killed is None and runner.is_alive() and time.monotonic() < deadline:
        if _ray_workers_running("train-"):
            time.sleep(1.0)  # a moment into the training (its first epochs), so the job is killed mid-way
            for pid in _ray_workers_running("train-"):  # still training: kill that worker
                os.kill(pid, signal.SIGKILL)
                killed = pid
        time.sleep(0.1)
    runner.join(timeout=240)
    assert killed is not None, "no training job was seen running"
    assert not runner.is_alive()
    assert result == {"done": 0, "ran": 3, "errors": 0}  # the killed training was run again by Ray
    assert all(read_record(record_path(out, d.id))["status"] == "ok" for d in [*plan.trains, *plan.defends])


def test_a_job_that_raises_is_an_error_record_under_ray(ray_instance, tmp_path):
    """Its model's training failed (an error record, so it is not run again): each defense raises, which is
    recorded as an error, as locally; no defense waits on a training that is not run."""
    plan = bench_plan(_small_suite(attacks=1), "smoke")
    train = plan.trains[0]
    write_record(record_path(tmp_path, train.id), {"id": train.id, "kind": "train", "status": "error", "error": "x"})
    counts = run_plan(plan, tmp_path, device="cpu", executor=make_executor("ray"))
    assert counts == {"done": 1, "ran": 2, "errors": 3}
    for job in plan.defends:
        record = read_record(record_path(tmp_path, job.id))
        assert record["status"] == "error" and record["error"].startswith("FileNotFoundError: the poisoned model")


def test_executor_options_are_checked_without_ray(monkeypatch):
    with pytest.raises(ValueError, match="--jobs is for --executor local"):
        make_executor("ray", jobs=4)
    with pytest.raises(ValueError, match="--address, --cpus-per-job only apply to --executor ray"):
        make_executor("local", address="auto", cpus_per_job=2)
    with pytest.raises(ValueError, match="unknown executor 'dask'; choose one of: local, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="--gpus-per-job > 0"):
        make_executor("ray", device="cuda", gpus_per_job=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValueError, match=r"needs Ray, which is not installed: pip install 'ibau\[ray\]'"):
        make_executor("ray")
    with pytest.raises(ValueError, match="give jobs or an executor"):
        run_plan(bench_plan(_small_suite(), PRESETS["smoke"]), "unused", jobs=2, executor=LocalExecutor(2))
