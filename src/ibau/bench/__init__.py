"""``ibau bench``: the paper's experiments as one resumable grid of jobs, and ``ibau report`` on its records.

>>> from ibau.bench import SUITES, PRESETS, expand
>>> plan = expand(SUITES["one_trigger"], PRESETS["smoke"])
>>> len(plan.trains), len(plan.cells), plan.reference is not None
(8, 112, True)
"""
from __future__ import annotations

from pathlib import Path

from .grid import DefendJob, JobStatus, Plan, TrainJob, bench_plan, expand, plan_status, run_plan, status_lines
from .pages import build_paper_pages
from .report import build_report
from .suites import PRESETS, SUITES, Preset, Suite, load_preset, load_suite

__all__ = ["DefendJob", "JobStatus", "PRESETS", "Plan", "Preset", "SUITES", "Suite", "TrainJob", "bench_plan", "build_paper_pages",
           "build_report", "expand", "load_preset", "load_suite", "plan_status", "run_bench", "run_plan", "status_lines"]


def run_bench(suite: str | Suite, preset: str | Preset = "smoke", out: str | Path = "runs/bench",
              data_dir: str | None = None, device: str | None = None, jobs: int = 1, retry_errors: bool = False,
              defenses: list[str] | None = None, executor=None, attacks: list[str] | None = None) -> dict[str, int]:
    """Expand ``suite`` at ``preset`` (:func:`bench_plan`) and run every unfinished job into ``out``
    (:func:`run_plan`; ``executor`` None: ``jobs`` local processes).

    ``defenses`` keeps only those columns of the suite and ``attacks`` only the rows with those labels (the
    jobs are the same as in a full run, so a later full run reuses them).
    """
    return run_plan(bench_plan(suite, preset, defenses, attacks), out, data_dir=data_dir, device=device, jobs=jobs,
                    retry_errors=retry_errors, executor=executor)
