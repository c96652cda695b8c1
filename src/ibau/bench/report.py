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
from .aggregate import load_run, progress, row_keys, row_label
from .plots import plot_curves, plot_effect, plot_stability, plot_variants
from .tables import (
    CSV_FIELDS,
    FAIL_MARK,
    Table,
    acc_asr_table,
    cell_text,
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
def build_report(out: str | Path, dest: str | Path | None = None) -> dict[str, Path]:
    """Write every suite's table (md + csv), plots and ``report.html`` into ``dest`` (default out/report)."""
    out = Path(out)
    dest = Path(dest) if dest is not None else out / "report"
    dest.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    sections = []
    for run in load_run(out):
        name = run["suite"]["name"]
        table = table_for(run)
        md = dest / f"{name}.md"
        captions: dict[Path, str] = {}
        pics = [p for p in (plot_curves(run, dest / f"{name}_curves.png"),
                            plot_effect(run, dest / f"{name}_effect.png") if run["suite"]["metric"] == "time_to_effect" else None,
                            plot_stability(run, dest / f"{name}_stability.png") if run["suite"]["seeds"] > 1 else None,
                            plot_variants(run, dest / f"{name}_variants.png")) if p is not None]
        for p, caption in delta_pictures(run, out).items():
            copy = dest / "deltas" / p.name
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(p.read_bytes())
            pics.append(copy)
            captions[copy] = caption
        text = table.markdown() + _status_line(run) + "\n" + "".join(
            f"\n![{captions.get(p, p.stem)}]({p.relative_to(dest).as_posix()})\n" for p in pics)
        md.write_text(f"# {run['suite']['title']}\n\n" + text)
        written[f"{name}.md"] = md
        written[f"{name}.csv"] = write_csv(run, dest / f"{name}.csv")
        for p in pics:
            written[p.relative_to(dest).as_posix()] = p
        images = "".join(_img_tag(p, captions.get(p, p.stem)) for p in pics)
        sections.append(table.html() + f"<p>{html.escape(_status_line(run))}</p>" + images)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ibau bench report</title><style>"
            "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
            "img{max-width:100%}</style></head><body><h1>ibau bench report</h1>"
            f"<p>From the records in {html.escape(str(out))}.</p>" + "".join(sections) + "</body></html>")
    (dest / "report.html").write_text(page)
    written["report.html"] = dest / "report.html"
    return written


def _status_line(run: dict) -> str:
    p = progress(run)
    preset = run["preset"]
    return (f"{p.finished} of {p.cells} cells finished, {p.errors} errors; preset {preset['name']} "
            f"({preset['dataset']}, {preset['arch']}, {preset['epochs']} epochs, "
            f"clean set {preset['clean_size']}); ibau {p.versions.get('ibau', '?')}, torch {p.versions.get('torch', '?')}.")


def _img_tag(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<figure><img src='data:image/png;base64,{data}'><figcaption>{html.escape(caption)}</figcaption></figure>"
