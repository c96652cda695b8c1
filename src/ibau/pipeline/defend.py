"""Run a defense on a model with held-out evaluation at every checkpoint, and write the run's report.

Shared by ``ibau demo`` and ``ibau defend``: ``metrics.json`` (one fixed-key record), ``report.md``,
``delta.png`` (what the defense recovered beside the true trigger) and ``curve.png`` (ACC/ASR against
defense time).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks.base import Trigger
from ..data.arrays import ImageSet
from ..defenses import Defense, DefenseResult
from ..metrics import EffectMonitor, evaluate
from ..records import config_dict as defense_config  # noqa: F401 (re-exported for benchmarks)
from ..records import defense_outcome, new_record, write_record
from .artifacts import markdown_report, plot_curve, plot_delta

logger = logging.getLogger(__name__)


def run_defense(defense: Defense, model: nn.Module, clean: ImageSet, held: ImageSet, trigger: Trigger | None,
                num_classes: int, progress: bool = True) -> tuple[DefenseResult, dict[str, float], dict[str, float]]:
    """Run ``defense`` on ``model`` with ``clean``; held-out ACC/ASR/RA before, at every checkpoint
    (clock paused) and after. Returns ``(result, before, after)``; ``result.time_to_effect`` is set."""
    before = evaluate(model, held.images, held.labels, trigger, num_classes)
    logger.info("before: " + _fmt(before))
    logger.info(f"{defense.name} with {len(clean)} clean images")
    # without progress bars (a background run) every checkpoint is one line of the log
    monitor = EffectMonitor(held.images, held.labels, trigger, num_classes, report=not progress)
    result = defense.run(model, clean, callback=monitor, progress=progress)
    after = evaluate(result.model, held.images, held.labels, trigger, num_classes)
    effect = ("" if trigger is None else "; ASR < 20% " + (f"after {result.time_to_effect:.1f}s" if
                                                            result.time_to_effect is not None else "never reached"))
    logger.info("after:  " + _fmt(after) + f"  ({result.seconds:.1f}s{effect})"
        + (" — interrupted, last finished round kept" if result.extra.get("interrupted") else ""))
    return result, before, after


def _fmt(m: dict[str, float]) -> str:
    return "  ".join(f"{k.upper()} {100 * m[k]:.1f}%" for k in ("acc", "asr", "ra") if k in m)


def _pictures(result: DefenseResult) -> dict[str, torch.Tensor]:
    """What the defense recovered, for delta.png: I-BAU's δ, UAP's δ, synthesised triggers of flagged classes."""
    pics: dict[str, torch.Tensor] = {}
    for cls, found in (result.triggers or {}).items():
        if cls != -1 and result.flagged is not None and cls not in result.flagged:
            continue
        for key, t in found.items():
            if key == "delta" or key.startswith("delta_"):
                pics[f"{key.replace('_', ' ')}" + (f", class {cls}" if cls != -1 else "")] = t
        if "mask" in found and "pattern" in found:
            pics[f"trigger of class {cls} (mask·pattern)"] = found["mask"] * found["pattern"]
    return pics


def write_report(out: Path, title: str, defense: Defense, result: DefenseResult, before: dict[str, float],
                 after: dict[str, float], trigger: Trigger | None, shape: tuple[int, ...],
                 seconds: dict[str, float], description: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json, report.md, delta.png and curve.png into ``out``; returns the record."""
    out.mkdir(parents=True, exist_ok=True)
    has_asr = "asr" in before
    rounds = [{**r, **next((h for h in result.history if h["step"] == r["round"]), {})}
              for r in result.extra.get("rounds", [])]
    for r in rounds:
        r.pop("step", None)
    record = new_record("defend", **extra, **defense_outcome(defense, result, before, after),
                        seconds={**seconds, "defense": result.seconds}, rounds=rounds,
                        attack=trigger.spec() if trigger is not None else None)
    write_record(out / "metrics.json", record)
    pictures = _pictures(result)
    trigger_image = trigger.apply(torch.zeros(1, *shape))[0] if trigger is not None else None
    if pictures or trigger_image is not None:
        plot_delta(pictures, trigger_image, out / "delta.png")
    points = [{"seconds": 0.0, **before}] + [h for h in result.history if "acc" in h]
    if has_asr:
        plot_curve(points, out / "curve.png", f"{defense.name} defense time (s), evaluation excluded")
    lines = [description, "", f"{defense.name} config: `{defense_config(defense)}`.", ""]
    if result.flagged is not None:
        lines += [f"Flagged classes: {result.flagged or 'none'}; anomaly index per class: "
                  + ", ".join(f"{k}: {v:.2f}" for k, v in (result.anomaly or {}).items()), ""]
    if has_asr:
        tte = result.time_to_effect
        acc_then = result.acc_at_effect
        lines += ["Time to effect (held-out ASR < 20%): " + (f"{tte:.1f}s, ACC then {100 * acc_then:.2f}%."
                                                              if tte is not None and acc_then is not None else "never."), ""]
        lines += ["| checkpoint | defense s | ACC % | ASR % |", "|---|---:|---:|---:|"]
        lines += [f"| {p.get('step', 'before')} | {p['seconds']:.1f} | {100 * p['acc']:.2f} | {100 * p['asr']:.2f} |"
                  for p in points]
        (out / "report.md").write_text(markdown_report(title, defense.title, before, after, record["seconds"], lines))
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
    from ..data import defender_split, load_dataset
    from ..models import ModelCard, load_model
    from ..models.io import card_path

    _, test = load_dataset(dataset, data_dir=data_dir, download=download, train_limit=1)
    card = None
    if not card_path(model_path).exists():
        if arch is None:
            raise ValueError(f"{Path(model_path).name} has no card ({card_path(model_path).name}); "
                             "pass --arch to say which architecture it is")
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
    from ..attacks import make_trigger
    from ..models.io import read_card

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


def build_defense(method: str, card, preset: str = "default", seed: int = 0, device: str | None = None,
                  rounds: int | None = None, batch_size: int | None = None, options: dict | None = None,
                  data_dir: str | None = None, download: bool = False) -> Defense:
    """The defense ``ibau defend --method`` runs (the grid's too): :meth:`Defense.from_options` of the
    registered class with ``preset`` and ``options`` (``rounds``/``batch_size``, when given, are two more
    options). A defense that trains on the poisoned set (``dp``) gets it rebuilt from the model card
    (dataset, attack, ratio, seed) and checked against the recorded indices."""
    from ..defenses import defense_class
    from ..utils import resolve_device

    cls = defense_class(method)
    sizes = {k: v for k, v in (("rounds", rounds), ("batch_size", batch_size)) if v is not None}
    settings: dict[str, Any] = dict(options={**sizes, **(options or {})}, preset=preset, seed=seed,
                                    device=str(resolve_device(device)))
    defense = cls.from_options(**settings)  # bad settings fail here, before any data is rebuilt
    if not cls.needs_training_data:
        return defense
    train = poisoned_training_set(card, data_dir, download)
    logger.info(f"{method} trains from scratch on the poisoned training set ({len(train)} images, rebuilt from the card)")
    return cls.from_options(**settings, train=train)


def poisoned_training_set(card, data_dir: str | None, download: bool = False) -> ImageSet:
    """Rebuild the poisoned training set of a model made by ``ibau attack`` from its card."""
    from ..attacks import make_trigger, poison
    from ..data import load_dataset

    meta = card.metadata
    missing = [k for k in ("dataset", "train_size", "poison_ratio", "seed", "attack", "poisoned_indices") if k not in meta]
    if missing:
        raise ValueError(f"the model card lacks {', '.join(missing)}, so its poisoned training set cannot be rebuilt; "
                         "use a model made by `ibau attack`")
    train, _ = load_dataset(meta["dataset"], data_dir=data_dir, download=download, train_limit=meta["train_size"])
    if meta["attack"] is None:
        return train
    trigger = make_trigger(**meta["attack"])
    if any(part.trains_with_model or part.clean_label for part in trigger.components()):
        raise ValueError(f"{meta['attack']['name']}'s poisoned training set cannot be rebuilt from the card (its "
                         "poisons are trained or crafted against a model), so dp cannot run on it")
    p = poison(train.images, train.labels, trigger, meta["poison_ratio"],
               num_classes=card.num_classes, seed=meta["seed"])
    if p.indices.tolist() != list(meta["poisoned_indices"]):
        raise ValueError("the rebuilt poisoned set does not match the card's poisoned indices; point --data-dir at "
                         "the data the model was trained on")
    return ImageSet(p.images, p.labels)
