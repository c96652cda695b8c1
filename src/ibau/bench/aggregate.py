"""Records → rows: what every table and picture of a bench report shows, computed from stored records only.

``ibau report`` is four layers, each a function of the one before; as in RobustBench, nothing is measured
or trained on the way:

1. **records**: one JSON record per job (:mod:`ibau.records`, whose accessors are the only code that knows
   a record's layout), placed in a table cell by the suite's manifest (:func:`load_run`);
2. **rows** (this module): mean ± std over seeds (:class:`Stat`, :class:`Summary`), the paper's failure
   rule and DER of each run (:func:`ibau.metrics.failed`, :func:`ibau.metrics.der`, as recorded), the
   paper's "I-BAU vs best baseline" verdict (:func:`verdict`), the paper's numbers beside a row
   (:func:`paper_row`, from :mod:`ibau.bench.paper`), and one row type per table or picture kind:
   :func:`acc_asr_rows`, :func:`per_trigger_rows`, :func:`effect_rows`, :func:`stability_series`,
   :func:`variant_rows`, :func:`curves`, :func:`long_rows` (the CSV);
3. **tables** (:mod:`ibau.bench.tables`: rows → markdown, HTML, CSV text) and **pictures**
   (:mod:`ibau.bench.plots`: rows → PNG; matplotlib is imported there, inside the drawing functions);
4. **the page** (:mod:`ibau.bench.report`: every suite's table and pictures, ``report.html``).

Nothing here formats text or imports matplotlib, so every row can be tested from a few hand-written
records. Values stay fractions (0.85, not 85); tables and plots scale them to percent.

A *run* is a suite manifest (``suites/<name>.json``: ``suite``, ``preset``, ``cells``) whose cells carry
their ``record`` (None until the job has run); *cells* is a list of such cells.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import records as rec
from . import paper
from .suites import PAPER_DEFENSES

Cells = list[dict[str, Any]]

#: Paper tables whose numbers stand beside a row of the ACC / ASR table (the others are notes or columns).
ROW_TABLES = ("table1", "table2", "table4", "table5", "appendix")
#: The settings of a cell that can vary across a suite's rows, in the order a row label names them.
ROW_KEYS = ("attack_label", "poison_ratio", "clean_size", "variant")
#: The class count of a run none of whose records has one: only records written before grid records
#: carried ``num_classes`` lack it, and the grid then ran 10-class data only (the digits, CIFAR-10).
LEGACY_CLASSES = 10


# --- records of a bench folder ---------------------------------------------------------------------
def load_run(out: Path) -> list[dict[str, Any]]:
    """Every suite manifest of ``out`` with its cells' records attached (None where not finished)."""
    manifests = sorted((out / "suites").glob("*.json"))
    if not manifests:
        raise ValueError(f"{out} holds no bench run (no suites/*.json); run `ibau bench --out {out}` first")
    runs = []
    for path in manifests:
        m = json.loads(path.read_text())
        for cell in m["cells"]:
            cell["record"] = _read(out / "records" / f"{cell['job']}.json")
            cell["train_record"] = _read(out / "records" / f"{cell['train']}.json")
        m["reference_record"] = _read(out / "records" / f"{m['reference']}.json") if m.get("reference") else None
        m["folder"] = str(out)
        runs.append(m)
    return runs


def load_runs(folders: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The runs (:func:`load_run`) of several bench folders, e.g. a CIFAR-10 and a GTSRB one, in order."""
    runs = [run for folder in folders for run in load_run(Path(folder))]
    if not runs:
        raise ValueError("no bench folder given; pass at least one folder written by `ibau bench`")
    return runs


def _read(path: Path) -> dict[str, Any] | None:
    return rec.read_record(path) if path.exists() else None


def finished(cells: Cells) -> list[dict[str, Any]]:
    """The records of the cells whose job ran to the end."""
    return [c["record"] for c in cells if rec.is_ok(c["record"])]


def recorded_rounds(cells: Cells) -> list[int]:
    """The distinct rounds in the config of the cells' finished records (I-BAU's), in order."""
    return sorted({r["config"]["rounds"] for r in finished(cells)
                   if isinstance(r.get("config"), dict) and "rounds" in r["config"]})


def of_method(cells: Cells, method: str) -> Cells:
    return [c for c in cells if c["method"] == method]


def recorded_classes(cells: Cells) -> int | None:
    """The first class count recorded by a cell's defend job or its training job; None if none has one."""
    for c in cells:
        for r in (c.get("record"), c.get("train_record")):
            n = rec.num_classes(r, default=0)  # 0: this record has no count
            if n:
                return n
    return None


def class_count(cells: Cells) -> int:
    """The number of classes of the models the cells ran on (chance-level ASR is its inverse): the first
    count recorded (:func:`recorded_classes`), else :data:`LEGACY_CLASSES`."""
    return recorded_classes(cells) or LEGACY_CLASSES


def paper_dataset(run: dict[str, Any]) -> str | None:
    """The paper's dataset whose numbers this run stands beside: ``"cifar10"`` for a CIFAR-like dataset with
    10 classes, ``"gtsrb"`` for GTSRB with 43, None otherwise (an npz file of GTSRB, the digits). A run with
    no record yet takes its dataset's count."""
    dataset, n = run["preset"]["dataset"], recorded_classes(run["cells"])
    for name, family in (("cifar10", paper.CIFAR_LIKE), ("gtsrb", paper.GTSRB_LIKE)):
        if dataset in family and n in (None, paper.CLASSES[name]):
            return name
    return None


def cifar_like(run: dict[str, Any]) -> bool:
    """Whether the run's numbers can stand beside the paper's CIFAR-10 ones (:func:`paper_dataset`)."""
    return paper_dataset(run) == "cifar10"


# --- mean ± std over seeds -------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """One metric over seeds: its values, their mean and sample standard deviation (None for one value).

    >>> s = Stat((0.8, 0.9))
    >>> round(s.mean, 6), round(s.std, 6), Stat((0.5,)).std
    (0.85, 0.070711, None)
    """

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.mean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def percent(self) -> Stat:
        """The values × 100 (plots take the mean and std of percentages)."""
        return Stat(tuple(100 * v for v in self.values))


@dataclass(frozen=True)
class Summary:
    """A group of cells (the seeds of one setting and one defense) before or after the defense.

    ``metrics`` holds every metric that all finished seeds measured, over those seeds. ``failed``: whether
    any finished seed failed by the paper's rule (after the defense, with an ASR; otherwise None). ``der``:
    the seeds' DER (after, when every seed has one).
    """

    cells: int
    recorded: int
    finished: int
    metrics: dict[str, Stat] = field(default_factory=dict)
    failed: bool | None = None
    der: Stat | None = None
    #: ``setting=ran`` for each setting a finished seed ran that its job would not run now
    #: (:func:`ibau.bench.grid.config_drift`): the cell then measures that setting, not today's default
    drift: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        """``"empty"`` (no cells), ``"pending"`` (none recorded yet), ``"error"`` (recorded, none finished), ``"ok"``."""
        if not self.cells:
            return "empty"
        if not self.recorded:
            return "pending"
        return "ok" if self.finished else "error"

    @property
    def missing(self) -> int:
        """Cells without a finished record."""
        return self.cells - self.finished

    @property
    def acc(self) -> Stat | None:
        return self.metrics.get("acc")

    @property
    def asr(self) -> Stat | None:
        return self.metrics.get("asr")


def summarize(cells: Cells, when: str = "after") -> Summary:
    """The :class:`Summary` of ``cells`` ``"before"`` or ``"after"`` the defense."""
    done = finished(cells)
    common = [k for k in rec.measured(done[0], when) if all(k in rec.measured(r, when) for r in done)] if done else []
    metrics = {k: Stat(tuple(rec.measured(r, when)[k] for r in done)) for k in common}
    after = when == "after" and bool(done)
    ders = [rec.outcome_der(r) for r in done]
    return Summary(len(cells), sum(c["record"] is not None for c in cells), len(done), metrics,
                   failed=any(bool(rec.outcome_failed(r)) for r in done) if after and "asr" in metrics else None,
                   der=Stat(tuple(d for d in ders if d is not None)) if after and None not in ders else None,
                   drift=_drift(done) if after else ())


def _drift(records: list[dict[str, Any]]) -> tuple[str, ...]:
    from .grid import config_drift
    return tuple(sorted({f"{k}={ran}" for r in records for k, (ran, _) in config_drift(r).items()}))


def drifted(summaries: Iterable[Summary]) -> list[str]:
    """Every ``setting=ran`` of :attr:`Summary.drift` among ``summaries``, once each, sorted."""
    return sorted({d for s in summaries for d in s.drift})


# --- the paper's verdict ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """Is I-BAU comparable or better than the best baseline of a row (the paper's rule)?

    ``kind``: ``"none"`` (no I-BAU result with an ASR to judge), ``"pending"`` (a defense of the row has not
    run), ``"better"`` (every baseline loses more than 10 ACC points), ``"comparable"`` (comparable or
    better) or ``"worse"``; ``best`` is the best baseline with its mean ACC and ASR (fractions).
    """

    kind: str
    best: str | None = None
    best_acc: float | None = None
    best_asr: float | None = None


def verdict(by_method: dict[str, Cells]) -> Verdict:
    """The paper's verdict for one row (``{method: its cells}``): the best baseline is the one with the
    lowest mean ASR among the paper's baselines (:data:`ibau.bench.suites.PAPER_DEFENSES`; the later ANP, SAU and
    FT-SAM are shown beside them, not judged here) that keep ACC within 10 points; I-BAU is comparable or better if its ACC is
    less than 1 point below and its ASR less than 4 points above that baseline's, or if its ASR is at or
    below the chance rate (1/classes, :func:`class_count`)."""
    ibau = finished(by_method.get("ibau", []))
    if not ibau or not rec.has_asr(ibau[0]):
        return Verdict("none")
    # the paper's claim is about its baselines; ANP, SAU, FT-SAM are issue 19's comparison and may still wait
    judged = {m: cells for m, cells in by_method.items() if m == "ibau" or m in PAPER_DEFENSES}
    if any(c["record"] is None for cells in judged.values() for c in cells):
        return Verdict("pending")  # judge a row once I-BAU and every paper baseline in it have run
    acc, asr = _mean(ibau, "acc"), _mean(ibau, "asr")
    candidates = []
    for method, cells in judged.items():
        recs = finished(cells)
        if method == "ibau" or not recs:
            continue
        drop = statistics.mean(_value(r, "acc", "before") - _value(r, "acc") for r in recs)
        if drop <= 0.10:
            candidates.append((_mean(recs, "asr"), -_mean(recs, "acc"), method))
    if not candidates:
        return Verdict("better")
    b_asr, neg_acc, name = min(candidates)
    b_acc = -neg_acc
    chance = 1 / class_count(by_method["ibau"] + [c for m, cs in by_method.items() if m != "ibau" for c in cs])
    ok = (b_acc - acc < 0.01 and asr - b_asr < 0.04) or asr <= chance
    return Verdict("comparable" if ok else "worse", name, b_acc, b_asr)


def _value(record: dict[str, Any], key: str, when: str = "after") -> float:
    return rec.measured(record, when)[key]


def _mean(records: list[dict[str, Any]], key: str) -> float:
    return statistics.mean(_value(r, key) for r in records)


# --- rows of a suite -------------------------------------------------------------------------------
def row_keys(cells: Cells) -> list[str]:
    """The settings that vary across a suite's cells besides method and seed: they make the row label."""
    return [k for k in ROW_KEYS if len({c[k] for c in cells}) > 1] or ["attack_label"]


def row_label(cell: dict[str, Any], keys: list[str]) -> str:
    formats = {"poison_ratio": lambda v: f"{100 * v:g}% poison", "clean_size": lambda v: f"{v} clean"}
    return ", ".join(formats.get(k, str)(cell[k]) for k in keys)


def groups(cells: Cells, keys: list[str]) -> dict[str, dict[str, Cells]]:
    """``{row label: {method: cells}}`` in the order the cells come."""
    rows: dict[str, dict[str, Cells]] = {}
    for c in cells:
        rows.setdefault(row_label(c, keys), {}).setdefault(c["method"], []).append(c)
    return rows


def max_seeds(suite: dict[str, Any]) -> int:
    """The most seeds a defense of a stored suite ran with (``method_seeds`` over ``seeds``)."""
    per_method, seeds = suite.get("method_seeds") or {}, suite.get("seeds", 1)
    return max(per_method.get(m, seeds) for m in suite["defenses"])


def judged(suite: dict[str, Any]) -> bool:
    """Whether a suite's rows get the paper's verdict: I-BAU and at least one baseline."""
    return "ibau" in suite["defenses"] and len(suite["defenses"]) > 1


@dataclass(frozen=True)
class PaperRow:
    """The paper's numbers beside one row, (ACC %, ASR %) each: no defense, I-BAU, and the best baseline
    as (name, ACC %, ASR %); None where the paper has none. ``columns``: every defense the paper shows on
    this row, (ACC %, ASR %) or :data:`ibau.bench.paper.NOT_DETECTED`."""

    none: tuple[float, float] | None = None
    ibau: tuple[float, float] | None = None
    best: tuple[str, float, float] | None = None
    columns: dict[str, paper.PaperCell] = field(default_factory=dict)


def suite_paper(run: dict[str, Any]) -> str:
    """The suite's ``paper`` key; for a built-in suite stored before it had one (stability, norm_bound), the
    built-in suite's."""
    from .suites import SUITES

    key, name = run["suite"].get("paper") or "", run["suite"].get("name", "")
    return key or (SUITES[name].paper if name in SUITES else "")


def paper_key(run: dict[str, Any]) -> str | None:
    """The paper's table or figure with this run's numbers on its dataset (:data:`ibau.bench.paper.BY_DATASET`:
    one-trigger on GTSRB is Table 2), or None (another dataset, or a suite the paper does not have)."""
    dataset = paper_dataset(run)
    return paper.BY_DATASET.get((suite_paper(run), dataset)) if dataset else None


def paper_table(run: dict[str, Any]) -> str | None:
    """The paper table (a key of :data:`ibau.bench.paper.PAPER`) whose numbers stand beside this run's rows:
    :func:`paper_key` if it is one of :data:`ROW_TABLES`; else None."""
    key = paper_key(run)
    return key if key in ROW_TABLES else None


def _pair(value: paper.PaperCell | None) -> paper.Pair | None:
    return value if isinstance(value, tuple) else None


def _columns(table: dict[Any, dict[str, paper.PaperCell]], row: Any) -> dict[str, paper.PaperCell]:
    return {m: v for m, v in table.get(row, {}).items() if m != "none"}


def paper_row(run: dict[str, Any], cell: dict[str, Any]) -> PaperRow | None:
    """The paper's numbers for the row of ``cell`` (see :func:`paper_table`); None without a paper table."""
    key = paper_table(run)
    if key in ("table1", "table2"):
        rows, columns = (paper.TABLE1, paper.TABLE1_COLUMNS) if key == "table1" else (paper.TABLE2, paper.TABLE2_COLUMNS)
        t: dict[str, Any] = rows.get(cell["attack_label"], {})
        return PaperRow(t.get("none"), t.get("ibau"), t.get("best"), _columns(columns, cell["attack_label"]))
    if key == "table4":
        ratio = cell["poison_ratio"]
        t4 = paper.TABLE4_COLUMNS.get(ratio, {})
        return PaperRow(_pair(t4.get("none")), _pair(t4.get("ibau")), columns=_columns(paper.TABLE4_COLUMNS, ratio))
    if key == "table5":
        fraction = round(cell["clean_size"] / run["preset"]["clean_size"], 3)
        t5 = paper.TABLE5_COLUMNS.get(fraction, {})
        return PaperRow(_pair(t5.get("none")), _pair(t5.get("ibau")), columns=_columns(paper.TABLE5_COLUMNS, fraction))
    if key == "appendix":
        app = paper.APPENDIX.get(cell["attack_label"])
        return PaperRow(app[0], app[1], columns={"ibau": app[1]}) if app else PaperRow()
    return None


def paper_metrics(run: dict[str, Any]) -> dict[str, dict[str, float | str]]:
    """Table 3's numbers on the run's dataset, metric (``"acc"``, ``"asr"``, ``"asr:<trigger>"``) ->
    {defense or "none": %}; {} unless the run reproduces Table 3 on CIFAR-10 or GTSRB."""
    dataset = paper_dataset(run)
    return paper.TABLE3_COLUMNS.get(dataset or "", {}) if paper_key(run) == "table3" else {}


@dataclass(frozen=True)
class AccAsrRow:
    """One row of the ACC / ASR table: the attacked model, each defense, the paper, the verdict."""

    label: str
    before: Summary
    after: dict[str, Summary]
    paper: PaperRow | None
    verdict: Verdict | None


def acc_asr_rows(run: dict[str, Any]) -> list[AccAsrRow]:
    """One row per setting of the suite (attack, poison ratio, clean size, variant: those that vary);
    ``after`` has every defense of the suite in its order (an ``"empty"`` summary where a defense has no
    cell in the row); ``before`` comes from the first defense with a finished seed (all share the model)."""
    suite, cells = run["suite"], run["cells"]
    rows = []
    for label, by_method in groups(cells, row_keys(cells)).items():
        any_cells = [c for cs in by_method.values() for c in cs]
        first = next((cs for cs in by_method.values() if finished(cs)), any_cells)
        rows.append(AccAsrRow(label, summarize(first, "before"),
                              {m: summarize(by_method.get(m, [])) for m in suite["defenses"]},
                              paper_row(run, any_cells[0]), verdict(by_method) if judged(suite) else None))
    return rows


def variants_as_columns(run: dict[str, Any]) -> bool:
    """Whether the run compares one defense's variants over several rows (I-BAU's presets on Table 1's
    attacks): then the variants are the table's columns; a suite of one row keeps a row per variant."""
    suite, cells = run["suite"], run["cells"]
    return (len(suite["defenses"]) == 1 and len(suite["variants"]) > 1
            and len({c["attack_label"] for c in cells}) > 1 and row_keys(cells) == ["attack_label", "variant"])


@dataclass(frozen=True)
class VariantColumnsRow:
    """One attack of a variants-as-columns run: the model before, and the defense under each variant."""

    label: str
    before: Summary
    after: dict[str, Summary]


def variant_column_rows(run: dict[str, Any]) -> list[VariantColumnsRow]:
    """One row per attack label (in the suite's order), a :class:`Summary` per variant (``"empty"`` where the
    variant has no cell in the row)."""
    variants = list(run["suite"]["variants"])
    rows = []
    for label, by_variant in groups(run["cells"], ["attack_label"]).items():
        cells = [c for cs in by_variant.values() for c in cs]
        per = {v: [c for c in cells if c["variant"] == v] for v in variants}
        first = next((cs for cs in per.values() if finished(cs)), cells)
        rows.append(VariantColumnsRow(label, summarize(first, "before"), {v: summarize(per[v]) for v in variants}))
    return rows


def mean_der(summaries: list[Summary]) -> Stat | None:
    """The mean over rows of each row's mean DER (BackdoorBench's grid figure), when every row has one."""
    means = [s.der.mean for s in summaries if s.der is not None and s.der.values]
    return Stat(tuple(means)) if means and len(means) == len(summaries) else None


@dataclass(frozen=True)
class MetricRow:
    """One row of the per-trigger table: a metric (``"acc"``, ``"asr"`` (the mean over triggers) or
    ``"asr:<trigger>"``) of the attacked model (the first finished record) and after each defense."""

    key: str
    before: float | None
    after: dict[str, Summary]

    def stat(self, method: str) -> Stat | None:
        return self.after[method].metrics.get(self.key)


def per_trigger_rows(run: dict[str, Any]) -> list[MetricRow]:
    cells, methods = run["cells"], run["suite"]["defenses"]
    done = finished(cells)
    triggers = sorted({k for r in done for k in rec.trigger_keys(r, "before")})
    first = done[0] if done else None
    after = {m: summarize(of_method(cells, m)) for m in methods}
    return [MetricRow(key, rec.metric(first, key, "before"), after) for key in ["acc", "asr"] + triggers]


@dataclass(frozen=True)
class EffectRow:
    """One defense in the time-to-effect table (paper Table 6)."""

    method: str
    after: Summary
    time_to_effect: Stat | None   # seconds, when every finished seed reached ASR < 20%; else None ("never")
    times_ibau: float | None      # its mean over I-BAU's mean time to effect
    defense_seconds: Stat | None
    paper_seconds: float | None


def effect_rows(run: dict[str, Any]) -> list[EffectRow]:
    cells = run["cells"]
    by_method = {m: of_method(cells, m) for m in run["suite"]["defenses"]}
    ref = [t for r in finished(by_method.get("ibau", [])) if (t := rec.time_to_effect(r)) is not None]
    ref_mean = statistics.mean(ref) if ref else None
    paper_seconds = paper.seconds(paper_dataset(run) or "")
    rows = []
    for m, cs in by_method.items():
        done = finished(cs)
        tte = [t for r in done if (t := rec.time_to_effect(r)) is not None]
        reached = Stat(tuple(tte)) if done and len(tte) == len(done) else None
        seconds = [s for r in done if (s := rec.defense_seconds(r)) is not None]
        rows.append(EffectRow(m, summarize(cs), reached,
                              reached.mean / ref_mean if reached is not None and ref_mean else None,
                              Stat(tuple(seconds)) if seconds else None, paper_seconds.get(m)))
    return rows


@dataclass(frozen=True)
class EffectBar:
    """A defense's bar in the time-to-effect picture: the mean over seeds of its time to effect, or of
    its whole run for a seed that never reached it (then ``never``)."""

    method: str
    seconds: float
    never: bool


def effect_bars(run: dict[str, Any]) -> list[EffectBar]:
    bars = []
    for m in run["suite"]["defenses"]:
        done = finished(of_method(run["cells"], m))
        if done:
            tte = [rec.time_to_effect(r) for r in done]
            seconds = [t if t is not None else rec.defense_seconds(r) for t, r in zip(tte, done)]
            bars.append(EffectBar(m, statistics.mean(s for s in seconds if s is not None), None in tte))
    return bars


@dataclass(frozen=True)
class Series:
    """A defense's held-out metrics per checkpoint over seeds (checkpoint 0: before the defense):
    ``metrics["acc"]`` (and ``["asr"]`` when every seed measured one) has one :class:`Stat` per checkpoint,
    up to the shortest seed's run."""

    method: str
    seeds: int
    metrics: dict[str, list[Stat]]


def stability_series(run: dict[str, Any]) -> dict[str, Series]:
    """``{defense: Series}`` for the defenses of the suite with a finished seed, in the suite's order."""
    out = {}
    for method in run["suite"]["defenses"]:
        done = finished(of_method(run["cells"], method))
        if not done:
            continue
        series = [rec.checkpoints(r) for r in done]
        n = min(len(s) for s in series)
        keys = [k for k in ("acc", "asr") if all(k in p for s in series for p in s[:n])]
        out[method] = Series(method, len(done), {k: [Stat(tuple(s[j][k] for s in series)) for j in range(n)]
                                                 for k in keys})
    return out


@dataclass(frozen=True)
class VariantRow:
    """A variant of the suite (e.g. a norm bound Cδ) over every finished cell that ran it."""

    variant: str
    after: Summary


def variant_rows(run: dict[str, Any]) -> list[VariantRow]:
    """One row per variant with a finished cell, in the suite's order; none for a suite without variants."""
    variants = list(run["suite"]["variants"])
    if len(variants) < 2:
        return []
    rows = [VariantRow(v, summarize([c for c in run["cells"] if c["variant"] == v])) for v in variants]
    return [r for r in rows if r.after.finished]


@dataclass(frozen=True)
class Curve:
    """ACC and ASR (fractions) at every checkpoint of one run (:func:`ibau.records.checkpoints`)."""

    method: str
    acc: list[float]
    asr: list[float]


@dataclass(frozen=True)
class Panel:
    """One row of a suite as curves: one per defense of the row, in order; None where there is nothing to
    draw (no finished seed, or no ASR). The curve is the first finished seed's."""

    label: str
    curves: list[Curve | None]


def curves(run: dict[str, Any]) -> list[Panel]:
    panels = []
    for label, by_method in groups(run["cells"], row_keys(run["cells"])).items():
        drawn: list[Curve | None] = []
        for method, cells in by_method.items():
            done = finished(cells)
            if not done or not rec.has_asr(done[0], "before"):
                drawn.append(None)
                continue
            points = rec.checkpoints(done[0])
            drawn.append(Curve(method, [p["acc"] for p in points], [p["asr"] for p in points]))
        panels.append(Panel(label, drawn))
    return panels


# --- the whole run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    """How far a run is: cells, finished, errors, and the versions of the first record's environment."""

    cells: int
    finished: int
    errors: int
    versions: dict[str, Any]


def progress(run: dict[str, Any]) -> Progress:
    recs = [c["record"] for c in run["cells"]]
    return Progress(len(recs), sum(rec.is_ok(r) for r in recs), sum(r is not None and not rec.is_ok(r) for r in recs),
                    rec.versions(next((r for r in recs if r), None)))


#: The columns of the long-format CSV, one row per cell.
LONG_FIELDS = ["suite", "attack_label", "poison_ratio", "clean_size", "variant", "method", "seed", "status",
               "before_acc", "before_asr", "after_acc", "after_asr", "after_ra", "der", "failed", "defense_seconds",
               "time_to_effect", "job"]


def long_rows(run: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """One row (:data:`LONG_FIELDS`) per cell of the run, None where a record has no such field."""
    for c in run["cells"]:
        r = c["record"]
        yield {"suite": run["suite"]["name"],
               **{k: c[k] for k in ("attack_label", "poison_ratio", "clean_size", "variant", "method", "seed")},
               "status": rec.status(r), "before_acc": rec.metric(r, "acc", "before"),
               "before_asr": rec.metric(r, "asr", "before"), "after_acc": rec.metric(r, "acc"),
               "after_asr": rec.metric(r, "asr"), "after_ra": rec.metric(r, "ra"), "der": rec.outcome_der(r),
               "failed": rec.outcome_failed(r), "defense_seconds": rec.defense_seconds(r),
               "time_to_effect": rec.time_to_effect(r), "job": c["job"]}
