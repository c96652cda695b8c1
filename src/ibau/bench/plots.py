"""Rows → pictures: the PNGs of a bench report, drawn from :mod:`ibau.bench.aggregate`'s rows.

matplotlib is imported inside :func:`_figure` when a picture is drawn, never when this module (or the page,
:mod:`ibau.bench.report`, or anything that writes records) is imported; a function with nothing to draw
returns None without importing it. Figures are made with ``matplotlib.figure.Figure``, not pyplot, so no
backend is chosen or switched for the caller (a notebook keeps its own) and no figure is left open.
Pictures: ACC/ASR per checkpoint of every defense, one panel per table row (:func:`plot_curves`), seconds
to effect (:func:`plot_effect`), mean ± std over seeds per checkpoint (:func:`plot_stability`), final
ACC/ASR against the suite's variants (:func:`plot_variants`).
"""
from __future__ import annotations

from pathlib import Path

from . import aggregate as agg


def _figure(**kw):
    """A figure drawn to files only (Agg): no pyplot, so no backend is chosen or switched for the caller."""
    from matplotlib.figure import Figure

    return Figure(**kw)


def plot_curves(run: dict, path: Path) -> Path | None:
    """ACC (dashed) and ASR (solid) at every checkpoint of every defense, one panel per table row."""
    if not agg.progress(run).finished:
        return None
    panels = agg.curves(run)
    n = len(panels)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig = _figure(figsize=(4 * cols, 3 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for i, curve in enumerate(panel.curves):
            if curve is None:
                continue
            x = list(range(len(curve.acc)))
            color = f"C{i % 10}"
            ax.plot(x, [100 * v for v in curve.asr], "-", color=color, label=curve.method)
            ax.plot(x, [100 * v for v in curve.acc], "--", color=color)
        ax.set_title(panel.label, fontsize=9)
        ax.set_xlabel("checkpoint")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(-2, 102)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].set_ylabel("ASR (solid) / ACC (dashed) %")
    # one legend for the figure, from whichever panels have curves yet (the first may still be pending)
    lines = {ln.get_label(): ln for ax in axes.flat for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    axes.flat[0].legend(list(lines.values()), list(lines), fontsize=7)
    return _save(fig, path)


def plot_effect(run: dict, path: Path) -> Path | None:
    """Seconds to effect per defense; grey bars (the whole run) for a defense that never reached it."""
    bars = agg.effect_bars(run)
    if not bars:
        return None
    fig = _figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.bar([b.method for b in bars], [b.seconds for b in bars], color=["lightgrey" if b.never else "C0" for b in bars])
    for i, b in enumerate(bars):
        if b.never:
            ax.text(i, b.seconds, "never", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds to effect (grey: whole run, never reached)")
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    return _save(fig, path)


def plot_stability(run: dict, path: Path) -> Path | None:
    """Mean ± std over seeds of ACC and ASR per checkpoint, per method."""
    series = agg.stability_series(run)
    if not series:
        return None
    fig = _figure(figsize=(9, 3))
    axes = fig.subplots(1, 2)
    for i, method in enumerate(run["suite"]["defenses"]):
        s = series.get(method)
        if s is None:
            continue
        for ax, key in zip(axes, ("acc", "asr")):
            stats = [st.percent() for st in s.metrics.get(key, [])]
            if stats:
                x = range(len(stats))
                mean = [st.mean for st in stats]
                std = [st.std or 0.0 for st in stats]
                ax.plot(x, mean, color=f"C{i}", label=f"{method} ({s.seeds} seeds)")
                ax.fill_between(x, [m - d for m, d in zip(mean, std)], [m + d for m, d in zip(mean, std)],
                                color=f"C{i}", alpha=0.25)
            ax.set_title(key.upper() + " %")
            ax.set_xlabel("checkpoint (round / epoch)")
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def plot_variants(run: dict, path: Path) -> Path | None:
    """Final ACC and ASR against the suite's variants (e.g. the norm bound Cδ)."""
    rows = agg.variant_rows(run)
    if not rows:
        return None
    fig = _figure(figsize=(6, 3))
    ax = fig.subplots()
    x = range(len(rows))
    for key, style, name in (("acc", "o-", "ACC"), ("asr", "s-", "ASR")):
        stats = [r.after.metrics.get(key) for r in rows]
        if all(s is not None for s in stats):
            ax.plot(x, [100 * s.mean for s in stats if s is not None], style, label=name)
    ax.set_xticks(list(x), [r.variant for r in rows])
    ax.set_ylabel("%")
    ax.legend()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
