"""The paper's pages: one markdown page per table and figure of the paper, built from several bench folders.

``ibau report DIR [DIR ...] --pages --dest docs/paper`` (:func:`build_paper_pages`) reads the runs of every
folder (a CIFAR-10 one and a GTSRB one, say) and writes, per entry of :data:`PAGES`, ``<key>.md``: the
paper's caption as its title, one section per dataset the paper shows, each laid out like the paper's
table with a "paper" line under each of our rows, mean ± std where seeds vary, the pictures, the claims
judged on that page's runs (:mod:`ibau.bench.claims`) and where we differ from the paper. A dataset with no
run gets the table of the built-in suite with every cell "not run yet" and the command that fills it; a job
that could not run is listed with its error. ``index.md`` links the pages and judges every claim;
``report.html`` holds every page offline.
"""
from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import records as rec
from . import aggregate as agg
from . import claims as cl
from . import paper
from .report import img_tag, run_pictures, status_line, write_html
from .tables import (
    DATASET_NAMES,
    DER_NOTE,
    Table,
    acc_asr_table,
    best_text,
    claims_table,
    der_row,
    drift_note,
    effect_table,
    pair,
    pct,
    summary_text,
    verdict_text,
)

logger = logging.getLogger(__name__)

Run = dict[str, Any]
NOT_RUN = "not run yet"
#: The preset and data file that fill a dataset's section at the CPU scale.
PRESET_FOR = {"cifar10": ("cpu", "../shared/data/cifar10.npz"), "gtsrb": ("cpu_gtsrb", "../shared/data/gtsrb.npz")}
#: The paper's poisoned models: training images and epochs, for "where we differ".
PAPER_TRAINING = {"cifar10": (50000, 50), "gtsrb": (39209, 50)}
#: I-BAU's rounds in the paper's tables where the paper states them (Table 2: "after 100 rounds").
PAPER_IBAU_ROUNDS = {"table2": 100}
#: How far our I-BAU may be from the paper's before a row is listed under "where we differ" (points).
DIFF_ACC, DIFF_ASR = 5.0, 10.0


@dataclass(frozen=True)
class PageSpec:
    """One of the paper's tables or figures: its page file (``key``.md), caption, the built-in suite that
    reproduces it, the datasets the paper shows it on (one section each, "not run yet" without a run) and
    ``optional`` ones shown only when a run exists."""

    key: str
    title: str
    suite: str
    datasets: tuple[str, ...]
    optional: tuple[str, ...] = ()


PAGES = [
    PageSpec("table1", "Table 1: Results on CIFAR-10, one-trigger cases", "one_trigger", ("cifar10",)),
    PageSpec("table2", "Table 2: Results on GTSRB, one-trigger cases", "one_trigger", ("gtsrb",)),
    PageSpec("table3", "Table 3: Results for 7-trigger-7-target cases", "multi_trigger", ("cifar10", "gtsrb")),
    PageSpec("table4", "Table 4: Results on CIFAR-10 (Trojan WM) with different poison ratios", "poison_ratio",
             ("cifar10",)),
    PageSpec("table5", "Table 5: Results with different # of clean data on CIFAR-10 (Trojan WM)", "clean_size",
             ("cifar10",)),
    PageSpec("table6", "Table 6: Average time for defenses to be effective on one-trigger-one-target cases",
             "efficiency", ("cifar10", "gtsrb")),
    PageSpec("fig1", "Figure 1: I-BAU vs the naive heuristic (UAP adversarial training) over runs, BadNets",
             "stability", ("cifar10",)),
    PageSpec("fig2", "Figure 2: The ℓ2 norm bound Cδ of I-BAU against Trojan WM", "norm_bound", ("gtsrb",),
             optional=("cifar10",)),
]


# --- which runs fill which section ----------------------------------------------------------------------
def _builtin_paper(spec: PageSpec) -> str:
    from .suites import SUITES

    return SUITES[spec.suite].paper


def runs_for(spec: PageSpec, dataset: str, runs: list[Run]) -> list[Run]:
    """The runs of ``spec``'s suite (by name or paper key) on ``dataset`` (:func:`ibau.bench.aggregate.paper_dataset`)."""
    key = _builtin_paper(spec)
    return [r for r in runs if (r["suite"]["name"] == spec.suite or agg.suite_paper(r) == key)
            and agg.paper_dataset(r) == dataset]


def placeholder(spec: PageSpec, dataset: str) -> Run:
    """The built-in suite at the dataset's CPU preset with no record yet: every cell "not run yet"."""
    from .grid import expand, manifest
    from .suites import PRESETS, SUITES

    run = manifest(expand(SUITES[spec.suite], PRESETS[PRESET_FOR[dataset][0]]))
    for c in run["cells"]:
        c["record"] = c["train_record"] = None
    return {**run, "reference_record": None, "folder": None}


def bench_command(suite: str, dataset: str) -> str:
    preset, data = PRESET_FOR[dataset]
    return f"ibau bench --suite {suite} --preset {preset} --data-dir {data} --out runs/bench_{preset}"


# --- tables laid out like the paper's --------------------------------------------------------------------
def paper_cell(value: Any) -> str:
    """One of the paper's numbers: a pair, a single %, × (no trigger found), or – (the paper has no such cell)."""
    if value is None:
        return "–"
    if value == paper.NOT_DETECTED:
        return "× (no trigger found)"
    return pair(value) if isinstance(value, tuple) else f"{value:.2f}"


def _not_run_yet(table: Table) -> Table:
    """A cell with no record reads "not run yet" on the paper's pages (the bench report says "pending")."""
    table.rows = [[NOT_RUN if c == "pending" else c for c in row] for row in table.rows]
    return table


def rows_table(run: Run) -> Table:
    """The ACC / ASR table of a run with the paper's line under each row: its no-defense model, each defense it
    shows, and its best baseline in the verdict column."""
    suite, methods = run["suite"], run["suite"]["defenses"]
    keys = agg.row_keys(run["cells"])
    judge = agg.judged(suite)
    headers = [" / ".join(k.replace("_", " ") for k in keys), "no defense"] + methods
    table = Table(f"{suite['title']} — ACC / ASR %, ours (mean±std over seeds) and the paper's", headers
                  + (["I-BAU vs best baseline"] if judge else []))
    rows = agg.acc_asr_rows(run)
    for row in rows:
        ours = [row.label, summary_text(row.before)] + [summary_text(row.after[m]) for m in methods]
        table.rows.append(ours + ([verdict_text(row.verdict)] if row.verdict is not None else []))
        if row.paper is not None:
            line = [f"{row.label}: paper", paper_cell(row.paper.none)]
            line += [paper_cell(row.paper.columns.get(m)) for m in methods]
            table.rows.append(line + ([f"best: {best_text(row.paper.best)}"] if judge else []))
    over_attacks = keys == ["attack_label"] and len(rows) > 1
    if over_attacks:
        table.rows.append(der_row(rows, methods, len(table.headers)))
    table.notes.append("✗: failed by the paper's rule (ASR ≥ 20% or ACC drop > 10 points) in at least one seed. "
                       "'paper' lines: the paper's numbers; – where the paper has no such column."
                       + (DER_NOTE if over_attacks else ""))
    table.notes += drift_note(s for row in rows for s in row.after.values())
    return _not_run_yet(table)


def triggers_table(run: Run) -> Table:
    """Table 3's layout: clean ACC, mean ASR and ASR per trigger, ours and the paper's on the run's dataset."""
    methods = run["suite"]["defenses"]
    numbers = agg.paper_metrics(run)
    table = Table(f"{run['suite']['title']} — %, ours (mean±std over seeds) and the paper's",
                  ["metric", "no defense"] + methods)
    rows = agg.per_trigger_rows(run)
    after = rows[0].after  # every row shares the defenses' summaries
    rows += [agg.MetricRow(key, None, after) for key in numbers if key not in {r.key for r in rows}]  # not measured yet
    for row in rows:
        name = {"acc": "clean ACC", "asr": "mean ASR"}.get(row.key, row.key.replace("asr:", "ASR "))
        ours = [pct(s) if (s := row.stat(m)) is not None else _state(row.after[m]) for m in methods]
        table.rows.append([name, "–" if row.before is None else f"{100 * row.before:.2f}"] + ours)
        if row.key in numbers:
            theirs = numbers[row.key]
            table.rows.append([f"{name}: paper", paper_cell(theirs.get("none"))] + [paper_cell(theirs.get(m)) for m in methods])
    return _not_run_yet(table)


def _state(s: agg.Summary) -> str:
    return "error" if s.state == "error" else NOT_RUN


def section_table(spec: PageSpec, run: Run) -> Table:
    if run["suite"]["metric"] == "per_trigger":
        return triggers_table(run)
    if run["suite"]["metric"] == "time_to_effect":
        return _not_run_yet(effect_table(run))
    return rows_table(run) if agg.paper_table(run) else _not_run_yet(acc_asr_table(run))


# --- notes under a section -------------------------------------------------------------------------------
def errors(run: Run) -> list[str]:
    """"could not run" lines: each cell whose job recorded an error, with the error's first line."""
    lines = []
    for c in run["cells"]:
        why = rec.error_text(c["record"])
        if why is not None:
            where = " ".join(str(p) for p in (c["attack_label"], c["variant"], c["method"]) if p)
            lines.append(f"- could not run: {where} seed {c['seed']}: {why}")
    return lines


def load_note(run: Run) -> str | None:
    """Table 6's seconds depend on the machine's load: the 1-minute load averages the jobs ended with."""
    done = agg.finished(run["cells"])
    loads = [v for r in done if (v := rec.load(r)) is not None]
    if not loads:
        return None
    cpus = next((n for r in done if (n := rec.cpus(r)) is not None), None)
    threads = rec.versions(done[0]).get("threads", "?")
    return (f"Load: 1-minute load average {min(loads):.1f}–{max(loads):.1f} when the jobs ended, on {cpus} CPUs "
            f"({threads} torch threads). The paper's seconds are on a GPU: compare the × I-BAU ratios.")


def differences(run: Run, dataset: str) -> list[str]:
    """Where we differ: the scale of our run against the paper's, and each row whose I-BAU mean is more than
    :data:`DIFF_ACC` ACC or :data:`DIFF_ASR` ASR points from the paper's."""
    preset = run["preset"]
    images, epochs = PAPER_TRAINING[dataset]
    lines = [f"- Scale: preset {preset['name']}, {preset['arch']} trained on {preset.get('train_limit') or 'all'} "
             f"images for {preset['epochs']} epochs, clean set {preset['clean_size']}; the paper: {images} images, "
             f"{epochs} epochs, 5000 clean images. Fewer epochs and images give a weaker model, whose ACC moves more "
             "under any defense."]
    lines += _rounds_line(run)
    if agg.paper_table(run):
        for row in agg.acc_asr_rows(run):
            ours, theirs = row.after.get("ibau"), row.paper.ibau if row.paper else None
            if ours is None or theirs is None or ours.acc is None or ours.asr is None or ours.missing:
                continue
            d_acc, d_asr = 100 * ours.acc.mean - theirs[0], 100 * ours.asr.mean - theirs[1]
            if abs(d_acc) > DIFF_ACC or abs(d_asr) > DIFF_ASR:
                lines.append(f"- {row.label}: I-BAU {100 * ours.acc.mean:.2f} / {100 * ours.asr.mean:.2f}, "
                             f"the paper's {pair(theirs)} (ACC {d_acc:+.1f}, ASR {d_asr:+.1f} points).")
    return lines


def _rounds_line(run: Run) -> list[str]:
    """I-BAU's rounds in this run's records against the paper's, where the paper states its count."""
    theirs = PAPER_IBAU_ROUNDS.get(agg.paper_table(run) or "")
    ours = agg.recorded_rounds(agg.of_method(run["cells"], "ibau"))
    if theirs is None or not ours or ours == [theirs]:
        return []
    return [f"- Rounds: our I-BAU ran {' or '.join(map(str, ours))} rounds, the paper's "
            f"{theirs}. Each of ours is one pass over the clean set; the per-round curves show where ASR stood "
            "after each."]


# --- pages -----------------------------------------------------------------------------------------------
@dataclass
class Section:
    """One dataset's part of a page: heading, table, text lines and pictures."""

    heading: str
    table: Table
    lines: list[str]
    pictures: list[Path]


def _seeds_text(suite: dict[str, Any]) -> str:
    per = suite.get("method_seeds") or {}
    rest = suite.get("seeds", 1)
    named = ", ".join(f"{m} {n}" for m, n in per.items())
    return f"seeds: {named + ', ' if named else ''}{'every other defense' if named else 'every defense'} {rest}"


def build_section(spec: PageSpec, dataset: str, run: Run | None, dest: Path, index: int) -> Section:
    name = DATASET_NAMES[dataset]
    if run is None:
        run = placeholder(spec, dataset)
        return Section(f"{name}: {NOT_RUN}", section_table(spec, run),
                       [f"No {spec.suite} run on {name} in the folders given; fill it with "
                        f"`{bench_command(spec.suite, dataset)}`.", _seeds_text(run["suite"]) + "."], [])
    table = section_table(spec, run)
    lines = [f"From {run['folder']}; {_seeds_text(run['suite'])}. {status_line(run)}"]
    lines += errors(run)
    note = load_note(run) if run["suite"]["metric"] == "time_to_effect" else None
    lines += [note] if note else []
    pictures = run_pictures(run, dest, f"{spec.key}_{dataset}_{index}")
    return Section(f"{name}: {run['suite']['name']} at preset {run['preset']['name']}", table, lines, pictures)


@dataclass
class Page:
    spec: PageSpec
    sections: list[Section]
    claims: list[cl.Claim]
    differences: list[str]

    def markdown(self, dest: Path) -> str:
        out = [f"# {self.spec.title}", ""]
        if self.spec.key in paper.FIGURES:
            out += [f"The paper: {paper.FIGURES[self.spec.key]}", ""]
        for s in self.sections:
            out += [f"## {s.heading}", "", s.table.markdown(), *[line + "\n" for line in s.lines]]
            out += [f"![{p.stem}]({p.relative_to(dest).as_posix()})\n" for p in s.pictures]
        if self.claims:
            out += ["## The paper's claims", "", claims_table(self.claims, "Judged on this page's runs").markdown()]
        out += ["## Where and why we differ", "", *(self.differences or ["- Nothing measured yet."]), ""]
        return "\n".join(out)

    def html(self) -> str:
        parts = [f"<h2 id='{self.spec.key}'>{html.escape(self.spec.title)}</h2>"]
        if self.spec.key in paper.FIGURES:
            parts.append(f"<p>The paper: {html.escape(paper.FIGURES[self.spec.key])}</p>")
        for s in self.sections:
            parts += [f"<h3>{html.escape(s.heading)}</h3>", s.table.html()]
            parts += [f"<p>{html.escape(line)}</p>" for line in s.lines]
            parts += [img_tag(p, p.stem) for p in s.pictures]
        if self.claims:
            parts += ["<h3>The paper's claims</h3>", claims_table(self.claims, "Judged on this page's runs").html()]
        parts += ["<h3>Where and why we differ</h3>"] + [f"<p>{html.escape(d)}</p>" for d in self.differences]
        return "".join(parts)


def build_page(spec: PageSpec, runs: list[Run], found: list[cl.Claim], dest: Path) -> Page:
    """``spec``'s page: for each of its datasets, a section per run on it (or one "not run yet" section)."""
    sections, diffs = [], []
    for dataset in spec.datasets + spec.optional:
        matching: list[Run | None] = list(runs_for(spec, dataset, runs))
        if not matching and dataset in spec.datasets:
            matching = [None]
        for i, run in enumerate(matching):
            sections.append(build_section(spec, dataset, run, dest, i))
            diffs += differences(run, dataset) if run is not None else []
    mine = [c for c in found if spec.key in c.pages]
    diffs += [f"- Claim not reproduced: {c.text} {c.evidence}" for c in mine if c.status == cl.NOT_REPRODUCED]
    return Page(spec, sections, mine, diffs)


def build_paper_pages(folders: Iterable[str | Path], dest: str | Path) -> dict[str, Path]:
    """One page per table and figure of the paper (:data:`PAGES`) from the runs of ``folders``, into ``dest``:
    ``<key>.md`` with its pictures, ``index.md`` (links and the paper's claims) and ``report.html`` (all pages,
    offline). Returns ``{file name: path}``."""
    runs = agg.load_runs(folders)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    found = cl.claims(runs)
    written: dict[str, Path] = {}
    pages = [build_page(spec, runs, found, dest) for spec in PAGES]
    for page in pages:
        path = dest / f"{page.spec.key}.md"
        path.write_text(page.markdown(dest))
        written[path.name] = path
        for s in page.sections:
            written.update({p.name: p for p in s.pictures})
    written["index.md"] = _write_index(dest / "index.md", pages, found, runs)
    body = _index_html(pages, found) + "".join(page.html() for page in pages)
    written["report.html"] = write_html(dest / "report.html", "I-BAU: the paper's tables and figures, reproduced", body)
    logger.info(f"{len(pages)} paper pages from {len(runs)} runs -> {dest}")
    return written


def _write_index(path: Path, pages: list[Page], found: list[cl.Claim], runs: list[Run]) -> Path:
    folders = sorted({str(r["folder"]) for r in runs})
    lines = ["# I-BAU: the paper's tables and figures, reproduced", "",
             f"Built by `ibau report {' '.join(folders)} --pages` from the stored records only.", ""]
    lines += [f"- [{p.spec.title}]({p.spec.key}.md)" for p in pages]
    lines += ["", claims_table(found).markdown()]
    path.write_text("\n".join(lines))
    return path


def _index_html(pages: list[Page], found: list[cl.Claim]) -> str:
    links = "".join(f"<li><a href='#{p.spec.key}'>{html.escape(p.spec.title)}</a></li>" for p in pages)
    return f"<ul>{links}</ul>" + claims_table(found).html()
