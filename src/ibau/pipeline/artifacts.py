"""A run's human-readable files: a markdown before/after table, δ and curve plots. (Its JSON record is
:mod:`ibau.records`.) matplotlib is imported when a plot is drawn, not when this module is."""
from __future__ import annotations

from pathlib import Path

import torch

from ..metrics import DEFINITIONS, der, failed


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _img(t: torch.Tensor):
    return t.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()


def plot_delta(deltas: dict[str, torch.Tensor], trigger_image: torch.Tensor | None, path: Path) -> Path:
    """The true trigger (stamped on a black image) beside recovered δs, each shown as |δ| scaled to [0, 1]."""
    panels = [("true trigger", _img(trigger_image))] if trigger_image is not None else []
    for title, delta in deltas.items():
        panels.append((f"{title} (|δ| scaled, ‖δ‖₂={float(delta.norm()):.1f})",
                       _img(delta.abs() / max(float(delta.abs().max()), 1e-12))))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3), squeeze=False)
    for ax, (title, im) in zip(axes[0], panels):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curve(points: list[dict[str, float]], path: Path, xlabel: str = "defense time (s)") -> Path:
    """ACC and ASR (%) at each checkpoint against defense time; the first point is the model before."""
    xs = [p["seconds"] for p in points]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(xs, [100 * p["acc"] for p in points], "o-", label="ACC (clean)")
    ax.plot(xs, [100 * p["asr"] for p in points], "s-", label="ASR (triggered)")
    ax.axhline(20, color="grey", lw=0.8, ls="--", label="ASR fail line (20%)")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(-3, 103)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown_report(title: str, method: str, before: dict, after: dict, seconds: dict, extra_lines: list[str]) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    rows = [
        f"# {title}", "",
        "| model | ACC % | ASR % | RA % | seconds |", "|---|---:|---:|---:|---:|",
        f"| before (poisoned) | {pct(before['acc'])} | {pct(before['asr'])} | {pct(before['ra'])} "
        f"| {seconds.get('train', 0):.1f} (training) |",
        f"| after {method} | {pct(after['acc'])} | {pct(after['asr'])} | {pct(after['ra'])} | {seconds.get('defense', 0):.1f} (defense) |",
        "", f"DER {der(before, after):.3f}; the defense "
        + ("**failed** (ASR ≥ 20% or ACC drop > 10 points)." if failed(before, after) else "succeeded by the paper's rule."),
        "", *extra_lines, "", "## Metric definitions", "",
    ]
    rows += [f"- **{k.upper()}**: {v}" for k, v in DEFINITIONS.items()]
    rows += ["", "![recovered delta](delta.png) ![ACC/ASR against defense time](curve.png)", ""]
    return "\n".join(rows)
