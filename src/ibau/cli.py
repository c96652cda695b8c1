"""The ``ibau`` command. Every command only adapts a function of the Python API."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Remove backdoors from image classifiers with I-BAU, and measure it.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """Remove backdoors from image classifiers with I-BAU, and measure it."""


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for metrics.json, report.md, delta.png, curve.png."),
    seed: int = typer.Option(0, help="Seed for the split, poisoning, training and I-BAU."),
    epochs: int = typer.Option(12, help="Training epochs of the poisoned model."),
    rounds: Optional[int] = typer.Option(None, help="I-BAU rounds (default 5)."),
    preset: str = typer.Option("default", help="I-BAU preset: default, reference or paper."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N (default: CUDA if available)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Poison the embedded digits with BadNets, train a small VGG, remove the backdoor with I-BAU.

    Example: ibau demo --seed 1 --out runs/demo1
    """
    from .demo import demo_config, run_demo

    cfg = demo_config(preset, **({} if rounds is None else {"rounds": rounds}))
    record = run_demo(out, seed=seed, epochs=epochs, config=cfg, device=device, progress=progress,
                      log=lambda m: typer.echo(m, err=False))
    typer.echo(f"wrote {out}/metrics.json, report.md, delta.png, curve.png"
               + (" (interrupted: partial rounds)" if record["interrupted"] else ""))


@app.command()
def presets(name: Optional[str] = typer.Argument(None, help="Show one preset (default: list them all).")) -> None:
    """Print the I-BAU presets as JSON: default, reference (authors' code), paper (Algorithm 1).

    Example: ibau presets reference
    """
    from .unlearn import PRESETS

    table = {k: f().to_dict() for k, f in PRESETS.items()}
    if name is not None:
        if name not in table:
            raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(table)}")
        table = table[name]
    typer.echo(json.dumps(table, indent=2))


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with exit code 2 unless ``--debug``."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        app(args=args, prog_name="ibau")
    except (ValueError, TypeError) as exc:
        if "--debug" in args:
            raise
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
