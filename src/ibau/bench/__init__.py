"""``ibau bench``: the paper's experiments as one resumable grid of jobs, and ``ibau report`` on its records.

>>> from ibau.bench import SUITES, PRESETS, expand
>>> plan = expand(SUITES["one_trigger"], PRESETS["smoke"])
>>> len(plan.trains), len(plan.cells), plan.reference is not None
(8, 112, True)
"""
from __future__ import annotations

import logging
from pathlib import Path

from .grid import DefendJob, Plan, TrainJob, expand, run_plan
from .pages import build_paper_pages
from .report import build_report
from .suites import PRESETS, SUITES, Preset, Suite, load_preset, load_suite

logger = logging.getLogger(__name__)

__all__ = ["DefendJob", "PRESETS", "Plan", "Preset", "SUITES", "Suite", "TrainJob", "build_paper_pages", "build_report",
           "expand", "load_preset", "load_suite", "run_bench", "run_plan"]


def run_bench(suite: str | Suite, preset: str | Preset = "smoke", out: str | Path = "runs/bench",
              data_dir: str | None = None, device: str | None = None, jobs: int = 1, retry_errors: bool = False,
              defenses: list[str] | None = None) -> dict[str, int]:
    """Expand ``suite`` at ``preset`` and run every unfinished job into ``out`` (see :func:`run_plan`).

    ``defenses`` keeps only those columns of the suite (the jobs are the same as in a full run, so a later
    full run reuses them).
    """
    s = suite if isinstance(suite, Suite) else load_suite(suite)
    p = preset if isinstance(preset, Preset) else load_preset(preset)
    if defenses:
        missing = [d for d in defenses if d not in s.defenses]
        if missing:
            raise ValueError(f"suite {s.name} has no defense {', '.join(missing)}; its defenses are {', '.join(s.defenses)}")
        s = s.only(defenses)
    plan = expand(s, p)
    logger.info(f"suite {s.name} at preset {p.name}: {len(plan.trains) + (plan.reference is not None)} models to train, "
        f"{len(plan.defends)} defense runs, {len(plan.cells)} table cells -> {out}")
    return run_plan(plan, out, data_dir=data_dir, device=device, jobs=jobs, retry_errors=retry_errors)
