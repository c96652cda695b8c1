"""Rows → tables: the text of a bench report (markdown, HTML, CSV) from :mod:`ibau.bench.aggregate`'s rows.

One table per suite, of the kind its ``metric`` names (:func:`table_for`): ACC / ASR per setting with the
paper's numbers and verdict beside (:func:`acc_asr_table`; suites with seeds or variants are this kind
too), ASR per trigger (:func:`per_trigger_table`), or seconds to effect (:func:`effect_table`); and the
long-format CSV of every cell (:func:`write_csv`). Here numbers become text only: percentages with two
decimals, ``mean±std`` over seeds, ✗ for a defense that failed by the paper's rule (SPEC §4: ASR ≥ 20% or
an ACC drop of more than 10 points). No record is read here but through the rows.
"""
from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import aggregate as agg
from . import paper
from .claims import Claim

FAIL_MARK = " ✗"
#: a cell one of whose records ran a setting its job no longer runs (:func:`drift_note`)
DRIFT_MARK = " †"
#: The paper's datasets as the paper names them.
DATASET_NAMES = {"cifar10": "CIFAR-10", "gtsrb": "GTSRB"}
CSV_FIELDS = agg.LONG_FIELDS


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.headers))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines + [""] + self.notes) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        notes = "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        return f"<h3>{html.escape(self.title)}</h3><table><tr>{head}</tr>{body}</table>{notes}"


# --- numbers as text -------------------------------------------------------------------------------
def pct(stat: agg.Stat) -> str:
    """A fraction over seeds as percent: ``84.94`` for one seed, ``84.94±0.31`` (sample std) for several."""
    if stat.std is None:
        return f"{100 * stat.values[0]:.2f}"
    return f"{100 * stat.mean:.2f}±{100 * stat.std:.2f}"


def pair(p: Any) -> str:
    """One of the paper's (ACC %, ASR %) pairs."""
    return f"{p[0]:.2f} / {p[1]:.2f}" if p else "–"


def summary_text(s: agg.Summary) -> str:
    """``ACC / ASR`` (mean ± std over seeds) of a group of cells, ✗ if a seed failed, and how many seeds are
    missing; ``–`` without cells, ``pending``/``error`` without a finished seed."""
    if s.state == "empty":
        return "–"
    if s.state != "ok":
        return s.state
    assert s.acc is not None
    text = pct(s.acc)
    if s.asr is not None:
        text += " / " + pct(s.asr)
        if s.failed:
            text += FAIL_MARK
    if s.drift:
        text += DRIFT_MARK
    return text + ("" if not s.missing else f" ({s.missing} missing)")


def drift_note(summaries) -> list[str]:
    """The note under a table with † cells: which settings their records ran instead of today's defaults."""
    ran = agg.drifted(summaries)
    if not ran:
        return []
    return [f"†: a seed's record ran {', '.join(ran)}, which its job no longer runs (a default changed since); the "
            "cell measures that setting. Move the record out of records/ and re-run the suite to measure today's."]


def cell_text(cells: agg.Cells, key: str = "after") -> str:
    """``ACC / ASR`` (mean ± std over seeds) of a group of cells, ✗ if the defense failed."""
    return summary_text(agg.summarize(cells, key))


VERDICTS = {"none": "–", "pending": "pending", "better": "better (every baseline loses > 10 ACC points)"}


def verdict_text(v: agg.Verdict) -> str:
    if v.kind in VERDICTS:
        return VERDICTS[v.kind]
    assert v.best_acc is not None and v.best_asr is not None
    word = "comparable or better" if v.kind == "comparable" else "**worse**"
    return f"{word} (best: {v.best} {100 * v.best_acc:.2f} / {100 * v.best_asr:.2f})"


def compare_with_best(by_method: dict[str, agg.Cells]) -> str:
    """The paper's verdict for one row (:func:`ibau.bench.aggregate.verdict`) as text."""
    return verdict_text(agg.verdict(by_method))


# --- one table per suite ---------------------------------------------------------------------------
#: The paper's columns beside the ACC / ASR table, by paper table (:func:`ibau.bench.aggregate.paper_table`).
PAPER_HEADERS = {"table1": ["paper: no defense", "paper: I-BAU", "paper: best baseline"],
                 "table2": ["paper: no defense", "paper: I-BAU", "paper: best baseline"],
                 "table4": ["paper: I-BAU"], "table5": ["paper: I-BAU"], "appendix": ["paper: no defense → I-BAU"]}


def best_text(best: tuple[str, float, float] | None) -> str:
    """The paper's best baseline of a row: ``tabor 83.78 / 8.12``, or ``–``."""
    return f"{best[0]} {best[1]:.2f} / {best[2]:.2f}" if best else "–"


def _paper_cells(key: str | None, p: agg.PaperRow | None) -> list[str]:
    if key is None or p is None:
        return []
    if key in ("table1", "table2"):
        return [pair(p.none), pair(p.ibau), best_text(p.best)]
    if key == "appendix":
        return [f"{pair(p.none)} → {pair(p.ibau)}" if p.none else "–"]
    return [pair(p.ibau)]


def acc_asr_table(run: dict) -> Table:
    suite, preset = run["suite"], run["preset"]
    methods = suite["defenses"]
    keys = agg.row_keys(run["cells"])
    key = agg.paper_table(run)
    judge = agg.judged(suite)
    headers = [" / ".join(k.replace("_", " ") for k in keys), "no defense"] + methods + PAPER_HEADERS.get(key or "", [])
    if judge:
        headers.append("I-BAU vs best baseline")
    table = Table(f"{suite['title']} — ACC / ASR % on held-out test images, preset {preset['name']}", headers)
    rows = agg.acc_asr_rows(run)
    for row in rows:
        cells = [row.label, summary_text(row.before)] + [summary_text(row.after[m]) for m in methods]
        cells += _paper_cells(key, row.paper)
        if row.verdict is not None:
            cells.append(verdict_text(row.verdict))
        table.rows.append(cells)
    over_attacks = keys == ["attack_label"] and len(rows) > 1  # a grid of attacks: DER's mean means something
    if over_attacks:
        table.rows.append(der_row(rows, methods, len(headers)))
    table.notes.append("✗: the defense failed (ASR ≥ 20% or ACC dropped more than 10 points), the paper's rule. "
                       "Cells with several seeds show mean±std." + (DER_NOTE if over_attacks else ""))
    table.notes += drift_note(s for row in rows for s in row.after.values())
    if judge:
        table.notes.append("I-BAU vs best baseline (the paper's rule): the best baseline is the one with the lowest ASR "
                           "among those that keep ACC within 10 points; I-BAU is comparable or better if its ACC is "
                           "less than 1 point below and its ASR less than 4 points above that baseline's, or if its "
                           "ASR is at or below the chance rate (1/classes).")
    return table


DER_NOTE = (" Mean DER: BackdoorBench's defense effectiveness rating, (max(0, ΔASR) − max(0, ΔACC) + 1) / 2 in %, "
            "averaged over the seeds of a row, then over the rows; '–' until every row has a finished run.")


def der_row(rows: list, columns: list[str], width: int) -> list[str]:
    """The table's last row: each column's mean DER over the rows (:func:`ibau.bench.aggregate.mean_der`)."""
    ders = [agg.mean_der([r.after[c] for r in rows]) for c in columns]
    cells = ["mean DER", "–"] + ["–" if d is None else f"{100 * d.mean:.1f}" for d in ders]
    return cells + [""] * (width - len(cells))


def variant_columns_table(run: dict) -> Table:
    """One defense's variants side by side (columns) on every row, with each variant's mean DER over the rows."""
    suite, preset = run["suite"], run["preset"]
    variants = list(suite["variants"])
    rows = agg.variant_column_rows(run)
    table = Table(f"{suite['title']} — ACC / ASR % on held-out test images, {suite['defenses'][0]}, "
                  f"preset {preset['name']}", ["attack label", "no defense"] + variants)
    for row in rows:
        table.rows.append([row.label, summary_text(row.before)] + [summary_text(row.after[v]) for v in variants])
    table.rows.append(der_row(rows, variants, len(table.headers)))
    table.notes.append("✗: the defense failed (ASR ≥ 20% or ACC dropped more than 10 points), the paper's rule. "
                       "Cells with several seeds show mean±std." + DER_NOTE)
    table.notes += drift_note(s for row in rows for s in row.after.values())
    return table


def _metric_text(row: agg.MetricRow, method: str) -> str:
    stat = row.stat(method)
    if stat is not None:
        return pct(stat)
    state = row.after[method].state
    return "pending" if state in ("empty", "pending") else "error" if state == "error" else "–"


def per_trigger_table(run: dict) -> Table:
    suite = run["suite"]
    methods = suite["defenses"]
    table = Table(f"{suite['title']} — ASR % per trigger, preset {run['preset']['name']}",
                  ["metric", "no defense"] + methods)
    for row in agg.per_trigger_rows(run):
        name = {"acc": "clean ACC", "asr": "mean ASR"}.get(row.key, row.key.replace("asr:", "ASR "))
        table.rows.append([name, "–" if row.before is None else f"{100 * row.before:.2f}"]
                          + [_metric_text(row, m) for m in methods])
    dataset = agg.paper_dataset(run) if agg.paper_key(run) == "table3" else None
    if dataset is not None:
        p = paper.TABLE3 if dataset == "cifar10" else paper.TABLE3_GTSRB
        table.notes.append(f"Paper (Table 3, {DATASET_NAMES[dataset]}): no defense {pair(p['none'])}, "
                           f"I-BAU {pair(p['ibau'])}, NAD {pair(p['nad'])} (ACC / mean ASR).")
    return table


def effect_table(run: dict) -> Table:
    suite = run["suite"]
    table = Table(f"{suite['title']} — preset {run['preset']['name']}",
                  ["method", "seconds to effect", "× I-BAU", "defense s", "final ACC / ASR %", "paper s (GPU)"])
    for row in agg.effect_rows(run):
        paper_s = "–" if row.paper_seconds is None else str(row.paper_seconds)
        if not row.after.finished:
            table.rows.append([row.method, "pending", "–", "–", "–", paper_s])
            continue
        tte = row.time_to_effect
        table.rows.append([row.method, "never" if tte is None else f"{tte.mean:.1f}",
                           "–" if row.times_ibau is None else f"{row.times_ibau:.1f}",
                           "–" if row.defense_seconds is None else f"{row.defense_seconds.mean:.1f}",
                           summary_text(row.after), paper_s])
    table.notes.append("Seconds to effect: defense time until held-out ASR < 20%, evaluation excluded; 'never' if "
                       "it was not reached. The paper's seconds were measured on a GPU.")
    table.notes += drift_note(row.after for row in agg.effect_rows(run))
    return table


#: A suite's ``metric`` -> its table; ``acc_asr`` (also for seeds and variants) is the default.
TABLES = {"acc_asr": acc_asr_table, "per_trigger": per_trigger_table, "time_to_effect": effect_table}


def table_for(run: dict) -> Table:
    if run["suite"]["metric"] == "acc_asr" and agg.variants_as_columns(run):
        return variant_columns_table(run)
    return TABLES.get(run["suite"]["metric"], acc_asr_table)(run)


def write_csv(run: dict, path: Path) -> Path:
    """The run's long-format CSV (:data:`CSV_FIELDS`, one row per cell; empty where a cell has no value)."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        w.writerows(agg.long_rows(run))
    return path


# --- the paper's claims ----------------------------------------------------------------------------
def claims_table(found: list[Claim], title: str = "The paper's claims") -> Table:
    """The paper's claims (:func:`ibau.bench.claims.claims`): claim, status, the numbers behind it; the rules
    in the notes."""
    table = Table(title, ["claim", "status", "the numbers behind it"])
    table.rows = [[c.text, c.status, c.evidence] for c in found]
    table.notes = ["How each claim is judged (means over the seeds of the stored records):"] + [
        f"- {c.text} {c.rule}" for c in found]
    return table
