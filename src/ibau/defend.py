"""Run I-BAU on a model with per-round evaluation and write the run's report files.

Shared by ``ibau demo`` and ``ibau defend``: ``metrics.json`` (one fixed-key record), ``report.md``,
``delta.png`` (recovered δ beside the true trigger) and ``curve.png`` (ACC/ASR after each round).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .attacks.base import Trigger
from .data.arrays import ImageSet
from .metrics import DEFINITIONS, der, evaluate
from .report import markdown_report, plot_curve, plot_delta, write_json
from .unlearn import IBAUConfig, UnlearnResult, unlearn
from .utils import environment


def defend_with_ibau(model: nn.Module, clean: ImageSet, held: ImageSet, trigger: Trigger | None,
                     num_classes: int, cfg: IBAUConfig, progress: bool = True,
                     log: Callable[[str], None] = print) -> tuple[UnlearnResult, list[dict[str, float]]]:
    """Unlearn with ``clean``; evaluate on ``held`` before and after every round. Returns the result and
    the curve (round 0 = before)."""
    def measure(net) -> dict[str, float]:
        return evaluate(net, held.images, held.labels, trigger, num_classes)

    before = measure(model)
    log("before: " + _fmt(before))
    log(f"I-BAU with {len(clean)} clean images, {cfg.rounds} rounds")
    curve = [{"round": 0, **before}]

    def on_round(record, net, delta):
        m = measure(net)
        curve.append({"round": record.round, **m})
        return m

    result = unlearn(model, clean, cfg, callback=on_round, progress=progress)
    log("after:  " + _fmt(curve[-1]) + f"  ({result.seconds:.1f}s)"
        + (" — interrupted, last finished round kept" if result.interrupted else ""))
    return result, curve


def _fmt(m: dict[str, float]) -> str:
    return "  ".join(f"{k.upper()} {100 * m[k]:.1f}%" for k in ("acc", "asr", "ra") if k in m)


def write_report(out: Path, title: str, result: UnlearnResult, curve: list[dict[str, float]],
                 trigger: Trigger | None, shape: tuple[int, int, int], seconds: dict[str, float],
                 description: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json, report.md, delta.png and curve.png into ``out``; returns the record."""
    out.mkdir(parents=True, exist_ok=True)
    before, after = ({k: v for k, v in point.items() if k != "round"} for point in (curve[0], curve[-1]))
    trigger_image = trigger.apply(torch.zeros(1, *shape))[0] if trigger is not None else None
    deltas = {"δ, round 1": result.history[0].delta} if result.history else {}
    if len(result.history) > 1:
        deltas[f"δ, round {len(result.history)}"] = result.history[-1].delta
    plot_delta(deltas, trigger_image, out / "delta.png")
    has_asr = "asr" in before
    if has_asr:
        plot_curve(curve, out / "curve.png")
    record = {
        **extra, "interrupted": result.interrupted,
        "before": before, "after": after, "der": der(before, after) if has_asr else None,
        "seconds": {**seconds, "defense": result.seconds},
        "rounds": [{"round": h.round, "inner_loss": h.inner_loss, "outer_loss": h.outer_loss,
                    "delta_norm": h.delta_norm, "seconds": h.seconds, **h.extra} for h in result.history],
        "config": result.config.to_dict(), "attack": trigger.spec() if trigger is not None else None,
        "definitions": DEFINITIONS, "environment": environment(),
    }
    write_json(out / "metrics.json", record)
    lines = [description, "", f"I-BAU config: `{result.config.to_dict()}`.", ""]
    if has_asr:
        lines += ["| round | ACC % | ASR % | ‖δ‖₂ |", "|---:|---:|---:|---:|"]
        lines += [f"| {p['round']} | {100 * p['acc']:.2f} | {100 * p['asr']:.2f} | "
                  + (f"{result.history[p['round'] - 1].delta_norm:.2f}" if p["round"] else "–") + " |" for p in curve]
        (out / "report.md").write_text(markdown_report(title, before, after, record["seconds"], lines))
    else:
        lines += [f"ACC before {100 * before['acc']:.2f}%, after {100 * after['acc']:.2f}%. No trigger is known "
                  "for this model, so ASR and RA are not measured."]
        (out / "report.md").write_text(f"# {title}\n\n" + "\n".join(lines) + "\n\n![recovered delta](delta.png)\n")
    return record


# --- model files on named datasets (what `ibau defend` / `ibau evaluate` adapt) ---------------------
def load_for_dataset(model_path: str | Path, dataset: str, data_dir: str | None, download: bool,
                     clean_size: int, seed: int, arch: str | None = None):
    """Load a model file and the dataset's defender split. Returns ``(model, card, clean, held)``.

    ``clean`` is ``clean_size`` seeded images of the test split, ``held`` the disjoint rest (SPEC §4).
    Plain checkpoints without a card need ``arch``.
    """
    from .data import defender_split, load_dataset
    from .models import ModelCard, load_model
    from .models.io import card_path

    _, test = load_dataset(dataset, data_dir=data_dir, download=download, train_limit=1)
    card = None
    if not card_path(model_path).exists():
        if arch is None:
            raise ValueError(f"{Path(model_path).name} has no card ({card_path(model_path).name}); pass --arch to say which architecture it is")
        num_classes = int(test.labels.max()) + 1
        card = ModelCard(arch, num_classes, list(test.shape))
    model, card = load_model(model_path, card=card)
    if list(card.input_shape) != list(test.shape):
        raise ValueError(f"the model expects images {tuple(card.input_shape)} but {dataset} has {test.shape}; "
                         "pick the dataset the model was trained on")
    clean, held = defender_split(test, clean_size, seed=seed)
    return model, card, clean, held


def trigger_for(card, attack_from: str | Path | None) -> Trigger | None:
    """The trigger recorded in the model's card, or in ``attack_from`` (a run folder or a model file)."""
    from .attacks import make_trigger
    from .models.io import read_card

    spec = card.metadata.get("attack")
    if attack_from is not None:
        path = Path(attack_from)
        candidates = [path / "model.safetensors", path / "poisoned.safetensors"] if path.is_dir() else [path]
        found = next((c for c in candidates if c.with_suffix(".json").exists()), None)
        if found is None:
            raise ValueError(f"no model card found at {attack_from}; give a run folder or a .safetensors file with its card")
        spec = read_card(found).metadata.get("attack")
    if spec is None:
        return None
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"the card's attack entry {spec!r} is not a trigger spec; re-create the model with this version of ibau")
    return make_trigger(**spec)
