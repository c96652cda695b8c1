"""The page: a bench folder's stored records → tables, pictures and one HTML page (``ibau report DIR``).

For every suite run in the folder (``suites/<name>.json``): ``<suite>.md`` (its table and pictures),
``<suite>.csv`` (one row per cell, long format), the pictures, and ``report.html`` with all of them inline
(readable offline). The layers below this page, each a function of the one before:
:mod:`ibau.bench.aggregate` (records → rows: mean ± std over seeds, the failure rule, DER, the paper's
verdict and numbers), :mod:`ibau.bench.tables` (rows → markdown/HTML/CSV) and :mod:`ibau.bench.plots`
(rows → PNG, matplotlib imported only to draw). A cell fails as the paper marks it (SPEC §4): ASR ≥ 20% or
ACC drop > 10 points; it is shown with ✗. Their public functions are re-exported here.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path

from .. import records as rec
from .aggregate import load_run, max_seeds, progress, row_keys, row_label
from .claims import claims
from .plots import plot_curves, plot_effect, plot_stability, plot_variants
from .tables import (
    CSV_FIELDS,
    FAIL_MARK,
    Table,
    acc_asr_table,
    cell_text,
    claims_table,
    compare_with_best,
    effect_table,
    per_trigger_table,
    table_for,
    write_csv,
)

__all__ = ["CSV_FIELDS", "FAIL_MARK", "Table", "acc_asr_table", "build_report", "cell_text", "compare_with_best",
           "delta_pictures", "effect_table", "load_run", "per_trigger_table", "plot_curves", "plot_effect",
           "plot_stability", "plot_variants", "table_for", "write_csv"]


def delta_pictures(run: dict, out: Path) -> dict[Path, str]:
    """The recovered-δ-beside-true-trigger pictures of I-BAU and Neural Cleanse (seed 0), with captions."""
    keys = row_keys(run["cells"])
    found: dict[Path, str] = {}
    for c in run["cells"]:
        picture = rec.delta_picture(c["record"])
        if picture and c["method"] in ("ibau", "neural_cleanse") and c["seed"] == 0:
            p = out / picture
            if p.exists():
                found.setdefault(p, f"{row_label(c, keys)} — {c['method']}: recovered vs true trigger")
    return found


# --- the whole report ------------------------------------------------------------------------------
CLAIMS_HEADING = "The paper's claims"


def run_pictures(run: dict, dest: Path, stem: str) -> list[Path]:
    """The pictures of one run that have something to draw, written as ``dest/<stem>_<kind>.png``: ACC/ASR per
    checkpoint, seconds to effect (a time-to-effect suite), stability bands (several seeds), the variants."""
    drawn = (plot_curves(run, dest / f"{stem}_curves.png"),
             plot_effect(run, dest / f"{stem}_effect.png") if run["suite"]["metric"] == "time_to_effect" else None,
             plot_stability(run, dest / f"{stem}_stability.png") if max_seeds(run["suite"]) > 1 else None,
             plot_variants(run, dest / f"{stem}_variants.png"))
    return [p for p in drawn if p is not None]


def build_report(out: str | Path, dest: str | Path | None = None) -> dict[str, Path]:
    """Write every suite's table (md + csv), plots, ``claims.md`` (the paper's claims judged on this folder's
    runs) and ``report.html`` into ``dest`` (default out/report)."""
    out = Path(out)
    dest = Path(dest) if dest is not None else out / "report"
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sections = []
    runs = load_run(out)
    for run in runs:
        name = run["suite"]["name"]
        table = table_for(run)
        md = dest / f"{name}.md"
        captions: dict[Path, str] = {}
        pics = run_pictures(run, dest, name)
        for p, caption in delta_pictures(run, out).items():
            copy = dest / "deltas" / p.name
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(p.read_bytes())
            pics.append(copy)
            captions[copy] = caption
        text = table.markdown() + status_line(run) + "\n" + "".join(
            f"\n![{captions.get(p, p.stem)}]({p.relative_to(dest).as_posix()})\n" for p in pics)
        md.write_text(f"# {run['suite']['title']}\n\n" + text)
        written[f"{name}.md"] = md
        written[f"{name}.csv"] = write_csv(run, dest / f"{name}.csv")
        for p in pics:
            written[p.relative_to(dest).as_posix()] = p
        images = "".join(img_tag(p, captions.get(p, p.stem)) for p in pics)
        sections.append(table.html() + f"<p>{html.escape(status_line(run))}</p>" + images)
    found = claims_table(claims(runs), "Judged on this folder's runs")
    (dest / "claims.md").write_text(f"# {CLAIMS_HEADING}\n\n" + found.markdown())
    written["claims.md"] = dest / "claims.md"
    sections.append(f"<h2>{html.escape(CLAIMS_HEADING)}</h2>" + found.html())
    written["report.html"] = write_html(dest / "report.html", "ibau bench report",
                                        f"<p>From the records in {html.escape(str(out))}.</p>" + "".join(sections))
    return written


def write_html(path: Path, title: str, body: str) -> Path:
    """One self-contained page (styles inline, pictures as data URIs), readable offline."""
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
            f"img{{max-width:100%}}</style></head><body><h1>{html.escape(title)}</h1>" + body + "</body></html>")
    path.write_text(page)
    return path


def status_line(run: dict) -> str:
    p = progress(run)
    preset = run["preset"]
    return (f"{p.finished} of {p.cells} cells finished, {p.errors} errors; preset {preset['name']} "
            f"({preset['dataset']}, {preset['arch']}, {preset['epochs']} epochs, "
            f"clean set {preset['clean_size']}); ibau {p.versions.get('ibau', '?')}, torch {p.versions.get('torch', '?')}.")


def img_tag(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>"
