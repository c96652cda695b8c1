"""Run a defense on a model with held-out evaluation at every checkpoint, and write the run's report.

Shared by ``ibau demo`` and ``ibau defend``: ``metrics.json`` (one fixed-key record), ``report.md``,
``delta.png`` (what the defense recovered beside the true trigger) and ``curve.png`` (ACC/ASR against
defense time).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
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
                num_classes: int, progress: bool = True, resume_dir: Path | None = None,
                ) -> tuple[DefenseResult, dict[str, float], dict[str, float]]:
    """Run ``defense`` on ``model`` with ``clean``; held-out ACC/ASR/RA before, at every checkpoint
    (clock paused) and after. Returns ``(result, before, after)``; ``result.time_to_effect`` is set.
    ``resume_dir``: where the defense keeps its resumable parts (:meth:`ibau.defenses.base.Defense.resumable`)."""
    before = evaluate(model, held.images, held.labels, trigger, num_classes)
    logger.info("before: " + _fmt(before))
    logger.info(f"{defense.name} with {len(clean)} clean images")
    # without progress bars (a background run) every checkpoint is one line of the log
    monitor = EffectMonitor(held.images, held.labels, trigger, num_classes, report=not progress)
    result = defense.run(model, clean, callback=monitor, progress=progress, resume_dir=resume_dir)
    after = evaluate(result.model, held.images, held.labels, trigger, num_classes)
    effect = ("" if trigger is None else "; ASR < 20% " + (f"after {result.time_to_effect:.1f}s" if
                                                            result.time_to_effect is not None else "never reached"))
    logger.info("after:  " + _fmt(after) + f"  ({result.seconds:.1f}s{effect})"
        + (" — interrupted, last finished round kept" if result.extra.get("interrupted") else "")
        + _kept_round(result))
    return result, before, after


def _kept_round(result: DefenseResult) -> str:
    """I-BAU's round probe or accuracy guard: which round's model was kept, when not the last."""
    rounds, kept = result.extra.get("rounds") or [], result.extra.get("selected_round")
    if kept is None or kept == len(rounds):
        return ""
    if kept == 0:
        return " — no round kept clean accuracy within the accuracy guard: the model as handed over"
    if result.extra.get("closest_fallback"):
        return f" — no round kept clean accuracy within the accuracy guard: round {kept} of {len(rounds)}, the closest"
    if result.extra.get("suspect") is None:
        return f" — round {kept} of {len(rounds)} kept by the accuracy guard"
    return f" — round {kept} of {len(rounds)} kept by the round probe (suspect class {result.extra['suspect']})"


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
    record = new_record("defend", **extra, **defense_outcome(defense, result, before, after),
                        seconds={**seconds, "defense": result.seconds},
                        attack=trigger.spec() if trigger is not None else None)
    write_record(out / "metrics.json", record)
    pictures = _pictures(result)
    trigger_image = None
    if trigger is not None:  # a trigger given by examples (BackdoorBench's poisoned test set) draws its own picture
        draw = getattr(trigger, "picture", None)
        trigger_image = draw(shape) if callable(draw) else trigger.apply(torch.zeros(1, *shape))[0]
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
@dataclass
class LoadedModel:
    """A model file loaded for a dataset: the model and its card, the defender's ``clean`` set and the
    ``held`` out rest of the test split (at ``held_indices``), and what the file itself says about its
    trigger: BackdoorBench's poisoned test set (``carried``), or why it gives none (``no_trigger``)."""

    model: nn.Module
    card: Any
    clean: ImageSet
    held: ImageSet
    test: ImageSet
    held_indices: torch.Tensor
    carried: Any = None
    no_trigger: str | None = None


def load_external(model_path: str | Path, dataset: str, data_dir: str | None, download: bool, clean_size: int,
                  seed: int, arch: str | None = None, num_classes: int | None = None,
                  normalize: str | None = None) -> LoadedModel:
    """Load any model file ibau reads, with the dataset's defender split (SPEC §4).

    - an ibau model (a card beside the file): as its card says (``arch`` must repeat a card's
      ``module.path:factory``, the only architecture that runs the user's code);
    - a BackdoorBench ``attack_result.pt`` (recognised by its keys): architecture, class count, input size
      and normalisation from the file, and its poisoned test set for ASR when it can be read;
    - any other state dict (plain, or nested under ``net``/``state_dict``/``model``/``model_state_dict``,
      e.g. the I-BAU authors' ``{'net': ..., 'acc', 'epoch'}``): ``arch`` says what it is, ``num_classes``
      defaults to the dataset's, ``normalize`` (a name or ``MEAN,STD``) puts ibau's normalisation first.
      Names that differ load by layout when the tensors match one-to-one in order and shape.

    Every file is read with ``weights_only=True`` or safetensors (:func:`ibau.models.io.read_object`).
    """
    from ..data import defender_split, load_dataset
    from ..models import ModelCard, load_model
    from ..models import backdoorbench as bb
    from ..models.external import parse_normalize
    from ..models.io import card_path, fit_state, load_state, read_card, read_object, state_dict_of

    _, test = load_dataset(dataset, data_dir=data_dir, download=download, train_limit=1)
    path = Path(model_path)
    name = path.name
    norm = parse_normalize(normalize, channels=test.shape[0]) if normalize else None
    pts = None
    if card_path(path).exists():
        if norm is not None or num_classes is not None:
            raise ValueError(f"{name} has a card ({card_path(path).name}) that fixes its classes and normalisation; "
                             "--normalize and --num-classes are for files without one")
        if arch is not None and arch != read_card(path).arch:
            logger.warning(f"--arch {arch} ignored: {name}'s card says {read_card(path).arch}")
        model, card = load_model(path, trust_arch=arch)
    else:
        obj: Any = load_state(path) if path.suffix == ".safetensors" else read_object(path)
        if bb.is_attack_result(obj):
            card = bb.card_for(obj, name, arch=arch, num_classes=num_classes, normalization=norm)
            state = bb.state_of(obj, name)
            pts = bb.poisoned_test_set(obj, path.parent, name)
        else:
            if arch is None:
                raise ValueError(f"{name} has no card ({card_path(path).name}); pass --arch to say which architecture it is "
                                 "(a registered name, torchvision:NAME, timm:NAME or your own module.path:factory)")
            classes = num_classes if num_classes is not None else int(test.labels.max()) + 1
            card = ModelCard(arch, classes, list(test.shape), norm, metadata={"source": "state dict", "file": name})
            state = state_dict_of(obj, name)
        model = fit_state(card.build(), state, card, name)
    if list(card.input_shape) != list(test.shape):
        raise ValueError(f"the model expects images {tuple(card.input_shape)} but {dataset} has {test.shape}; "
                         "pick the dataset the model was trained on")
    if int(test.labels.max()) >= card.num_classes:
        raise ValueError(f"the model has {card.num_classes} classes but {dataset} has labels up to {int(test.labels.max())}; "
                         "pick the dataset the model was trained on, or pass --num-classes")
    clean, held = defender_split(test, clean_size, seed=seed)
    held_indices = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[clean_size:]
    if not torch.equal(test.labels[held_indices], held.labels):  # the split's own order, reproduced
        held_indices = torch.empty(0, dtype=torch.int64)
    loaded = LoadedModel(model, card, clean, held, test, held_indices)
    if isinstance(pts, str):
        loaded.no_trigger = pts
    elif pts is not None:
        loaded.carried = pts
    return loaded


def load_for_dataset(model_path: str | Path, dataset: str, data_dir: str | None, download: bool,
                     clean_size: int, seed: int, arch: str | None = None):
    """Load a model file and the dataset's defender split. Returns ``(model, card, clean, held)``.

    ``clean`` is ``clean_size`` seeded images of the test split, ``held`` the disjoint rest (SPEC §4).
    Plain checkpoints without a card need ``arch`` (:func:`load_external` takes every option).
    """
    loaded = load_external(model_path, dataset, data_dir, download, clean_size, seed, arch)
    return loaded.model, loaded.card, loaded.clean, loaded.held


def trigger_for(card, attack_from: str | Path | None, trigger: str | None = None,
                loaded: LoadedModel | None = None) -> Trigger | None:
    """The trigger for ASR/RA, first found of: ``trigger`` (``--trigger``: ``NAME,key=value,...`` or a
    trigger.json), the card of ``attack_from`` (a run folder or a model file), the model's own card, and
    the poisoned test set the model file carries (``loaded``, a BackdoorBench result). None: ACC only."""
    from ..attacks import make_trigger
    from ..attacks.io import parse_trigger
    from ..models.io import read_card

    if trigger is not None:
        return parse_trigger(trigger)
    spec = card.metadata.get("attack")
    if attack_from is not None:
        path = Path(attack_from)
        candidates = [path / "model.safetensors", path / "poisoned.safetensors"] if path.is_dir() else [path]
        found = next((c for c in candidates if c.with_suffix(".json").exists()), None)
        if found is None:
            raise ValueError(f"no model card found at {attack_from}; give a run folder or a .safetensors file with its card "
                             "(or name the trigger with --trigger)")
        spec = read_card(found).metadata.get("attack")
    if spec is None:
        return _carried_trigger(loaded)
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"the card's attack entry {spec!r} is not a trigger spec; re-create the model with this version of ibau")
    return make_trigger(**spec)


def _carried_trigger(loaded: LoadedModel | None) -> Trigger | None:
    from ..models import backdoorbench as bb

    if loaded is None:
        return None
    hint = "pass --trigger NAME,key=value (e.g. badnets,target=0) or a trigger.json for ASR"
    note = loaded.no_trigger
    if note is None and loaded.carried is None and loaded.card.metadata.get("source") == "state dict":
        note = f"{loaded.card.metadata.get('file', 'the file')} has no card that names its trigger"
    if loaded.carried is not None:
        if len(loaded.held_indices) == 0:
            note = "the held-out split could not be matched to the test split's indices"
        else:
            made = bb.carried_trigger(loaded.carried, loaded.test.images, loaded.test.labels, loaded.held_indices,
                                      loaded.card.num_classes, loaded.card.metadata.get("file", "the file"))
            if not isinstance(made, str):
                return made
            note = made
    if note is not None:
        logger.warning(f"no ASR: {note}; {hint}")
    return None


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
