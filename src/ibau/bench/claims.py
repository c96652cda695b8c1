"""Rows → verdicts on the paper's six claims, from the stored runs of one or more bench folders.

:func:`claims` judges each claim on the runs of the suite that reproduces it (found by the suite's
``paper`` key) and returns a :class:`Claim`: the claim, its rule, a status (:data:`REPRODUCED`,
:data:`NOT_REPRODUCED`, :data:`NOT_RUN`) and the numbers behind it in one line. Like the rest of
:mod:`ibau.bench.aggregate`, nothing here is measured: the numbers are means over the seeds of the stored
records. A claim is "not run yet" until every cell it needs has a finished record (a job that could not
run keeps it there, and its error is in the suite's table); a claim with several runs (e.g. CIFAR-10 and
GTSRB) is reproduced when it holds on each of them.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import records as rec
from ..metrics import failed
from . import aggregate as agg
from . import paper

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run yet"
#: Claim 4: the most I-BAU's mean ASR may vary across poison ratios (percentage points).
RATIO_SPREAD = 0.10
#: Claim 6: how far below the poisoned model's ACC I-BAU may end with a bound ≥ the trigger's norm, and how far
#: apart those bounds' ACCs may be (points).
BOUND_ACC_DROP, BOUND_ACC_SPREAD = 0.03, 0.02

Run = dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims judged on the runs: ``status`` is reproduced / not reproduced / not run yet,
    ``evidence`` the numbers behind it (one line), ``pages`` the paper pages whose runs judge it."""

    key: str
    text: str
    rule: str
    status: str
    evidence: str
    pages: tuple[str, ...]


@dataclass(frozen=True)
class Judgement:
    status: str
    evidence: str


@dataclass(frozen=True)
class Outcome:
    """I-BAU's means over the finished seeds of one table row (fractions)."""

    label: str
    acc_before: float
    acc: float
    asr: float

    @property
    def failed(self) -> bool:
        """The paper's failure rule on the means: ASR ≥ 20% or an ACC drop of more than 10 points."""
        return bool(failed({"acc": self.acc_before}, {"acc": self.acc, "asr": self.asr}))

    def text(self) -> str:
        return f"{self.label}: ACC {_pct(self.acc)} ({_pct(self.acc - self.acc_before, sign=True)}), ASR {_pct(self.asr)}"


def _pct(x: float, sign: bool = False) -> str:
    return f"{100 * x:+.1f}" if sign else f"{100 * x:.1f}"


def _some(items: list[str], shown: int = 3) -> str:
    """The first ``shown`` items, then how many more: evidence stays one short line."""
    more = len(items) - shown
    return "; ".join(items[:shown]) + (f"; and {more} more (see the tables)" if more > 0 else "")


def run_name(run: Run) -> str:
    """``suite (preset, dataset)``: which run a piece of evidence comes from."""
    return f"{run['suite']['name']} ({run['preset']['name']}, {agg.paper_dataset(run) or run['preset']['dataset']})"


def outcome(cells: agg.Cells, label: str) -> Outcome | None:
    """I-BAU's :class:`Outcome` over ``cells`` (one row's I-BAU cells); None until every seed has finished or
    for a model without a trigger."""
    after, before = agg.summarize(cells), agg.summarize(cells, "before")
    if not cells or after.missing or after.asr is None or after.acc is None or before.acc is None:
        return None
    return Outcome(label, before.acc.mean, after.acc.mean, after.asr.mean)


def _ibau_rows(run: Run) -> list[tuple[str, Outcome | None]]:
    """(row label, I-BAU's outcome or None while a seed is missing) for every row with I-BAU cells."""
    rows = agg.groups(run["cells"], agg.row_keys(run["cells"]))
    return [(label, outcome(by_method["ibau"], label)) for label, by_method in rows.items() if "ibau" in by_method]


def _runs(runs: list[Run], key: str) -> list[Run]:
    return [r for r in runs if agg.suite_paper(r) == key]


def _over_runs(runs: list[Run], key: str, judge: Callable[[Run], Judgement]) -> Judgement:
    """``judge`` on each run of suites with paper key ``key``: not reproduced if any run is, else not run yet
    if any run (or none at all) is, else reproduced."""
    from .suites import SUITES

    found = _runs(runs, key)
    if not found:
        suite = next((s.name for s in SUITES.values() if s.paper == key), key)
        return Judgement(NOT_RUN, f"no {suite} run yet")
    judged = [(run_name(r), judge(r)) for r in found]
    evidence = "; ".join(f"{name}: {j.evidence}" for name, j in judged)
    for status in (NOT_REPRODUCED, NOT_RUN):
        if any(j.status == status for _, j in judged):
            return Judgement(status, evidence)
    return Judgement(REPRODUCED, evidence)


# --- each row at the most rounds a run gave it -------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row with I-BAU of a one- or multi-trigger run: its cells by method and the rounds I-BAU ran."""

    run: Run
    label: str
    by_method: dict[str, agg.Cells]
    rounds: int

    @property
    def key(self) -> tuple[Any, ...]:
        """The poisoned model and the defender's data: rows of two runs with one key are one row of the paper's."""
        c = self.by_method["ibau"][0]
        return agg.paper_dataset(self.run), c.get("train"), c["clean_size"], c["poison_ratio"]

    @property
    def name(self) -> str:
        return f"{run_name(self.run)} {self.label}"


def _rounds(run: Run, cells: agg.Cells) -> int:
    """I-BAU's rounds in one row: from its finished records, else the suite's rounds for that row (0: unknown)."""
    from .suites import Suite

    recorded = agg.recorded_rounds(cells)
    if recorded:
        return recorded[-1]
    label = cells[0]["attack_label"]
    entry: dict[str, Any] = next((a for a in run["suite"].get("attacks", []) if Suite.label(a) == label), {})
    return int(entry.get("defense_options", {}).get("ibau", {}).get("rounds", 0))


def trigger_rows(runs: list[Run]) -> list[tuple[Row, Row | None]]:
    """Every row with I-BAU of the one- and multi-trigger runs (Tables 1-3), each with the row of another run
    that ran I-BAU for more rounds on the same model and clean set (the most rounds; None if no run did): a
    rounds suite (``one_trigger_rounds``, ``multi_trigger_rounds``) gives a row the rounds it needs (issue 17;
    the paper's Table 2 ran 100), and the claims judge the row at those rounds."""
    rows = [Row(r, label, by_method, _rounds(r, by_method["ibau"]))
            for r in _runs(runs, "table1") + _runs(runs, "table3")
            for label, by_method in agg.groups(r["cells"], agg.row_keys(r["cells"])).items() if "ibau" in by_method]

    def more(row: Row) -> Row | None:
        others = [o for o in rows if o.run is not row.run and o.key == row.key and o.rounds > row.rounds]
        return max(others, key=lambda o: o.rounds, default=None)

    return [(row, more(row)) for row in rows]


# --- the six claims -------------------------------------------------------------------------------------
def comparable_everywhere(runs: list[Run]) -> Judgement:
    """On every row of the one- and multi-trigger runs (Tables 1-3), the paper's verdict (the tables' "I-BAU vs
    best baseline" column) says I-BAU is comparable to or better than the best baseline. A row that a rounds
    suite ran for more rounds sets that I-BAU beside the row's baselines. Not reproduced as soon as one
    complete row is worse; not run yet while a row misses a record."""
    rows = []
    for row, longer in trigger_rows(runs):
        if not agg.judged(row.run["suite"]):
            continue
        by_method = row.by_method if longer is None else {**row.by_method, "ibau": longer.by_method["ibau"]}
        rows.append((row.name + ("" if longer is None else f" (I-BAU at {longer.rounds} rounds)"), agg.verdict(by_method)))
    if not rows:
        return Judgement(NOT_RUN, "no one_trigger or multi_trigger run with I-BAU and a baseline yet")
    worse = [f"{name} (best {v.best} {_pct(v.best_acc or 0)} / {_pct(v.best_asr or 0)})"
             for name, v in rows if v.kind == "worse"]
    done = [v for _, v in rows if v.kind in ("comparable", "better", "worse")]
    if worse:
        return Judgement(NOT_REPRODUCED, f"worse than the best baseline on {len(worse)} of {len(done)} judged rows: "
                                         + _some(worse))
    if len(done) < len(rows):
        return Judgement(NOT_RUN, f"comparable or better on {len(done)} judged rows; {len(rows) - len(done)} rows "
                                  "still miss a record")
    return Judgement(REPRODUCED, f"comparable or better on all {len(done)} rows "
                                 f"({sum(v.kind == 'better' for v in done)} better: every baseline failed)")


def fails_nowhere(runs: list[Run]) -> Judgement:
    """On every row of the one- and multi-trigger runs (Tables 1-3), I-BAU's mean over seeds does not fail by
    the paper's rule: mean ASR < 20% and mean ACC drop ≤ 10 points. A row that a rounds suite ran for more
    rounds is judged there alone."""
    judged = [row for row, longer in trigger_rows(runs) if longer is None]
    if not judged:
        return Judgement(NOT_RUN, "no one_trigger or multi_trigger run with I-BAU yet")
    rows = [(run_name(row.run), outcome(row.by_method["ibau"], row.label)) for row in judged]
    done = [(name, o) for name, o in rows if o is not None]
    bad = [f"{name} {o.text()}" for name, o in done if o.failed]
    if bad:
        return Judgement(NOT_REPRODUCED, f"I-BAU fails on {len(bad)} of {len(done)} finished rows: " + _some(bad))
    if len(done) < len(rows):
        return Judgement(NOT_RUN, f"effective on {len(done)} finished rows; {len(rows) - len(done)} rows still miss a seed")
    worst = max(done, key=lambda d: d[1].asr)
    return Judgement(REPRODUCED, f"effective on all {len(done)} rows (highest ASR: {worst[0]} {worst[1].text()})")


def _smallest_clean_set(run: Run) -> Judgement:
    cells = agg.of_method(run["cells"], "ibau")
    if not cells:
        return Judgement(NOT_RUN, "no I-BAU cells")
    smallest = min(c["clean_size"] for c in cells)
    o = outcome([c for c in cells if c["clean_size"] == smallest], f"{smallest} clean images")
    if o is None:
        return Judgement(NOT_RUN, f"I-BAU with {smallest} clean images has not finished every seed")
    return Judgement(NOT_REPRODUCED if o.failed else REPRODUCED, o.text())


def small_clean_set(runs: list[Run]) -> Judgement:
    """With the smallest clean set of the clean_size run (the paper's 100 images: 2% of 5,000), I-BAU's mean over
    seeds does not fail by the paper's rule: mean ASR < 20% and mean ACC drop ≤ 10 points."""
    return _over_runs(runs, "table5", _smallest_clean_set)


def _ratios(run: Run) -> Judgement:
    rows = _ibau_rows(run)
    if not rows or any(o is None for _, o in rows):
        return Judgement(NOT_RUN, f"{sum(o is not None for _, o in rows)} of {len(rows)} poison ratios finished")
    done = [o for _, o in rows if o is not None]
    spread = max(o.asr for o in done) - min(o.asr for o in done)
    text = "; ".join(o.text() for o in done) + f"; ASR spread {_pct(spread)} points"
    ok = not any(o.failed for o in done) and spread <= RATIO_SPREAD + 1e-9
    return Judgement(REPRODUCED if ok else NOT_REPRODUCED, text)


def poison_ratio_insensitive(runs: list[Run]) -> Judgement:
    """At every poison ratio of the poison_ratio run (Table 4), I-BAU's mean over seeds does not fail by the
    paper's rule (mean ASR < 20%, mean ACC drop ≤ 10 points), and its mean ASR varies by at most 10 points
    across the ratios (the paper's: 3.4, 9.8, 13.1)."""
    return _over_runs(runs, "table4", _ratios)


def _final_asrs(cells: agg.Cells) -> list[float]:
    return [rec.measured(r)["asr"] for r in agg.finished(cells) if rec.has_asr(r)]


def _rebound(record: dict[str, Any]) -> float:
    """The largest rise of ASR between consecutive checkpoints of one run (0 if it never rose)."""
    asr = [p["asr"] for p in rec.checkpoints(record) if "asr" in p]
    return max([0.0] + [b - a for a, b in zip(asr, asr[1:])])


def _stability(run: Run) -> Judgement:
    by = {m: agg.of_method(run["cells"], m) for m in ("ibau", "uap_at")}
    if any(len(agg.finished(cs)) < 2 or len(agg.finished(cs)) < len(cs) for cs in by.values()):
        counts = ", ".join(f"{m} {len(agg.finished(cs))} of {len(cs)}" for m, cs in by.items())
        return Judgement(NOT_RUN, f"needs every seed (at least 2) of I-BAU and UAP-AT; finished: {counts}")
    std = {m: statistics.stdev(_final_asrs(cs)) for m, cs in by.items()}
    rebound = {m: statistics.mean(_rebound(r) for r in agg.finished(cs)) for m, cs in by.items()}
    text = (f"std of final ASR over seeds: I-BAU {_pct(std['ibau'])}, UAP-AT {_pct(std['uap_at'])}; "
            f"mean largest ASR rebound: I-BAU {_pct(rebound['ibau'])}, UAP-AT {_pct(rebound['uap_at'])} points")
    no_worse = std["ibau"] <= std["uap_at"] and rebound["ibau"] <= rebound["uap_at"]
    better = std["ibau"] < std["uap_at"] or rebound["ibau"] < rebound["uap_at"]
    return Judgement(REPRODUCED if no_worse and better else NOT_REPRODUCED, text)


def more_stable(runs: list[Run]) -> Judgement:
    """In the stability run (Fig. 1, ≥ 2 seeds each), I-BAU is no less stable than UAP adversarial training on
    both measures and more stable on at least one: the standard deviation over seeds of the final ASR, and the
    mean over seeds of the largest rise of ASR between consecutive checkpoints (how erratic a run is)."""
    return _over_runs(runs, "fig1", _stability)


def _bound(variant: dict[str, Any]) -> float | None:
    """The ℓ2 bound Cδ a variant gives I-BAU (inf for ``norm: none``), None if it sets no bound."""
    options = variant.get("ibau", {})
    if options.get("norm") == "none":
        return math.inf
    return float(options["norm_bound"]) if "norm_bound" in options else None


def _trigger_norm(run: Run) -> tuple[float, str] | None:
    norms = [n for c in run["cells"] if (n := rec.trigger_l2(c.get("train_record"))) is not None]
    if norms:
        return norms[0], "recorded"
    if {c["attack_label"] for c in run["cells"]} == {"Trojan WM"}:
        return paper.TROJAN_WM_L2, "the paper's, not recorded by this run"
    return None


def _bounds(run: Run) -> Judgement:
    norm = _trigger_norm(run)
    if norm is None:
        return Judgement(NOT_RUN, "the trigger's ℓ2 norm is not recorded (train records before issue 17)")
    bounds = {label: b for label, v in run["suite"]["variants"].items() if (b := _bound(v)) is not None}
    large = [label for label, b in bounds.items() if b >= norm[0]]
    cells = agg.of_method(run["cells"], "ibau")
    rows = [outcome([c for c in cells if c["variant"] == label], label) for label in large]
    if not large or any(o is None for o in rows):
        return Judgement(NOT_RUN, f"bounds ≥ the trigger's norm {norm[0]:.2f}: {', '.join(large) or 'none'}; "
                                  "not every seed has finished")
    done = [o for o in rows if o is not None]
    drop = max(o.acc_before - o.acc for o in done)
    spread = max(o.acc for o in done) - min(o.acc for o in done)
    ok = drop <= BOUND_ACC_DROP + 1e-9 and spread <= BOUND_ACC_SPREAD + 1e-9
    text = (f"trigger ℓ2 {norm[0]:.2f} ({norm[1]}); " + "; ".join(f"{o.label}: ACC {_pct(o.acc)}" for o in done)
            + f" vs {_pct(done[0].acc_before)} without defense; largest drop {_pct(drop)}, spread {_pct(spread)} points")
    return Judgement(REPRODUCED if ok else NOT_REPRODUCED, text)


def large_bound_keeps_acc(runs: list[Run]) -> Judgement:
    """In the norm_bound run (Fig. 2), with every Cδ at or above the trigger's ℓ2 norm (Cδ = none included; the
    norm is the trigger's change to a zero image, recorded with the poisoned model, or the paper's 8.739 for
    Trojan WM), I-BAU's mean ACC is at most 3 points below the poisoned model's and those bounds' mean ACCs are
    within 2 points of each other."""
    return _over_runs(runs, "fig2", _bounds)


@dataclass(frozen=True)
class ClaimSpec:
    key: str
    text: str
    judge: Callable[[list[Run]], Judgement]
    pages: tuple[str, ...]

    @property
    def rule(self) -> str:
        return " ".join((self.judge.__doc__ or "").split())


#: The paper's claims (issue 17), each with the rule that judges it and the pages whose runs it reads.
CLAIMS = [
    ClaimSpec("comparable", "I-BAU is comparable to or better than the best baseline on every row.",
              comparable_everywhere, ("table1", "table2", "table3")),
    ClaimSpec("never_fails", "I-BAU fails on no row.", fails_nowhere, ("table1", "table2", "table3")),
    ClaimSpec("small_clean_set", "I-BAU is still effective with 100 clean images.", small_clean_set, ("table5",)),
    ClaimSpec("poison_ratio", "I-BAU is insensitive to the poison ratio.", poison_ratio_insensitive, ("table4",)),
    ClaimSpec("stability", "I-BAU is more stable than adversarial training with universal perturbations (UAP-AT).",
              more_stable, ("fig1",)),
    ClaimSpec("norm_bound", "A norm bound at or above the trigger's norm does not hurt ACC.", large_bound_keeps_acc,
              ("fig2",)),
]


def claims(runs: list[Run]) -> list[Claim]:
    """The paper's six claims (:data:`CLAIMS`) judged on ``runs`` (:func:`ibau.bench.aggregate.load_runs`).

    The rules (each function's docstring; means over seeds, fractions shown as %):

    1. comparable (:func:`comparable_everywhere`): the paper's verdict is "comparable or better" on every row of
       the one- and multi-trigger runs (Tables 1-3). The paper itself has one exception (Smooth on CIFAR-10).
    2. never fails (:func:`fails_nowhere`): I-BAU's mean ASR < 20% and mean ACC drop ≤ 10 points on every row
       of those runs.
    3. 100 clean images (:func:`small_clean_set`): the same at the smallest clean set of the clean_size run.
    4. poison ratio (:func:`poison_ratio_insensitive`): the same at every ratio of the poison_ratio run, and
       I-BAU's mean ASR varies by at most 10 points across the ratios.
    5. stability (:func:`more_stable`): over the seeds of the stability run, I-BAU's final-ASR std and mean
       largest ASR rebound are no larger than UAP-AT's, one of them smaller.
    6. norm bound (:func:`large_bound_keeps_acc`): with every Cδ ≥ the trigger's ℓ2 norm, I-BAU's mean ACC is
       at most 3 points below the poisoned model's, and those ACCs are within 2 points of each other.

    In 1 and 2, a row that a rounds suite ran for more rounds on the same model is judged with that I-BAU
    (:func:`trigger_rows`): the most rounds decide, whichever way they went.
    """
    out = []
    for spec in CLAIMS:
        j = spec.judge(runs)
        out.append(Claim(spec.key, spec.text, spec.rule, j.status, j.evidence, spec.pages))
    return out
