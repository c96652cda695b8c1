"""Train a poisoned model: what ``ibau attack`` adapts. Resumable from the last finished epoch.

How each trigger family poisons the training is a strategy in :mod:`.poisoning`."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import ATTACKS, build_attack, parse_attack
from ..attacks.base import Trigger
from ..attacks.io import load_trigger, save_trigger
from ..data import ImageSet, load_dataset
from ..metrics import DEFINITIONS, evaluate
from ..models import ModelCard, build_model, load_model, save_model
from ..records import new_record, write_record
from ..training import RECIPES, check_augment, check_lr_schedule, recipe, train_classifier  # noqa: F401 (re-exported)
from ..utils import environment, resolve_device, seeded_rng
from .poisoning import POISONS, AttackRun, VictimSet, poisoning_for, restamper  # noqa: F401 (POISONS, restamper re-exported)
from .poisoning import crafted_poisons as _poisoned  # noqa: F401 (the crafted case of a former helper; tests use it)

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a training set (the model's normalisation layer)."""
    return images.mean((0, 2, 3)).tolist(), images.std((0, 2, 3)).clamp_min(1e-3).tolist()


#: Reference images drawn from the training set for optimised triggers.
REFERENCE_IMAGES = 512


def prepare_trigger(attack: str | Trigger | None, train_images: torch.Tensor, target: int | None = None,
                    all_to_all: bool = False, reference_model: str | Path | None = None,
                    trigger_file: str | Path | None = None, seed: int = 0, device: str | None = None,
                    steps: int | None = None, options: dict | None = None, test_set: ImageSet | None = None) -> Trigger | None:
    """The trigger of an ``ibau attack`` run: a saved ``trigger_file``; ``"none"`` (a clean model); or
    the ``--attack`` text, generating optimised triggers against ``reference_model`` on a seeded
    sample of the training images (``steps`` optimisation steps; default: each trigger's). ``test_set``, the
    dataset's test split, is where a blend with ``pattern="test_image"`` takes its image."""
    if isinstance(attack, Trigger):
        return attack
    if trigger_file is not None:
        return load_trigger(trigger_file)
    if attack is None or attack == "none":
        return None
    entries = parse_attack(attack, target=target, all_to_all=all_to_all, options=options)
    needs = [name for name, _ in entries if ATTACKS[name].needs_reference]
    model = images = None
    if needs:
        if reference_model is None:
            raise ValueError(f"{', '.join(needs)} is optimised against a reference model; pass --reference-model "
                             "(e.g. a clean model from `ibau attack --attack none`) or --trigger trigger.json")
        model, _ = load_model(reference_model)
        model.to(resolve_device(device))
        gen = torch.Generator().manual_seed(seed)
        images = train_images[torch.randperm(len(train_images), generator=gen)[:REFERENCE_IMAGES]]
        logger.info(f"generating {', '.join(needs)} against {reference_model} on {len(images)} training images")
    return build_attack(entries, model, images, seed=seed, steps=steps, test_set=test_set)


def _run_trigger(attack: str | Trigger | None, out: Path, train: ImageSet, resume: bool, **prepare: Any) -> Trigger | None:
    """The run's trigger: a resumed run's saved one, or :func:`prepare_trigger`'s, saved to ``out`` before training."""
    if resume and (out / CHECKPOINT).exists() and (out / "trigger.json").exists():
        return load_trigger(out / "trigger.json")
    if resume and (out / CHECKPOINT).exists() and attack in (None, "none"):
        return None
    trigger = prepare_trigger(attack, train.images, **prepare)
    if trigger is not None:
        save_trigger(trigger, train.shape, out)
    return trigger


def train_poisoned(dataset: str, attack: str | Trigger | None, out: str | Path, data_dir: str | None = None,
                   download: bool = False, poison_ratio: float = 0.2, epochs: int = 50, arch: str = "small_vgg",
                   train_limit: int | None = None, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                   device: str | None = None, resume: bool = False, progress: bool = True,
                   target: int | None = None, all_to_all: bool = False, reference_model: str | Path | None = None,
                   trigger_file: str | Path | None = None, trigger_steps: int | None = None,
                   trigger_options: dict | None = None, lr_schedule: str = "constant", augment: str = "none") -> dict[str, Any]:
    """Poison ``dataset``'s training split with ``attack``, train ``arch`` on it, and write ``out/``:
    ``model.safetensors`` + card (attack spec, poisoned indices, ACC/ASR/RA on the test split),
    ``trigger.json`` + ``trigger*.png`` (written before training), ``train.log``, ``metrics.json``,
    ``poisons.safetensors`` for crafted poisons and, while training, ``checkpoint.pt``.

    ``attack`` is a :class:`Trigger`, ``--attack`` text (see :func:`ibau.attacks.parse_attack`) or
    ``"none"`` for a clean model by the same recipe. How the trigger poisons the training (stamped,
    crafted or trained with the model) is its strategy, :func:`ibau.pipeline.poisoning.poisoning_for`. With
    ``resume=True`` an interrupted run reuses its saved trigger (and crafted poisons) and continues from its
    last finished epoch (same result as an uninterrupted one on CPU).
    ``lr_schedule`` and ``augment`` are :func:`ibau.training.train_classifier`'s (``"constant"`` or
    ``"cosine"``; ``"none"`` or ``"flip_crop"``). With augmentation the clean image is cropped and flipped
    first and the trigger stamped after, so the trigger stays in place, as it will be at test time.
    """
    check_lr_schedule(lr_schedule)  # before any data is loaded
    check_augment(augment)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    with seeded_rng(seed, dev):  # the global RNG (weight init) follows the seed; the caller's is restored
        train, test = load_dataset(dataset, data_dir=data_dir, download=download, train_limit=train_limit)
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        trigger = _run_trigger(attack, out, train, resume, target=target, all_to_all=all_to_all,
                               reference_model=reference_model, trigger_file=trigger_file, seed=seed, device=device,
                               steps=trigger_steps, options=trigger_options, test_set=test)
        run = AttackRun(out=out, resume=resume, shape=train.shape, num_classes=num_classes, poison_ratio=poison_ratio,
                        epochs=epochs, lr=lr, batch_size=batch_size, lr_schedule=lr_schedule, augment=augment,
                        seed=seed, device=dev, progress=progress)
        strategy = poisoning_for(trigger)
        strategy.check(run)
        victim = strategy.training_set(train, run)
        mean, std = channel_stats(train.images)
        c, h, _ = train.shape
        model = build_model(arch, num_classes=num_classes, in_channels=c, input_size=h, mean=mean, std=std)
        saved = _checkpoint_of(model, run)
        ckpt = out / CHECKPOINT
        t0 = time.perf_counter()
        with (out / "train.log").open("a") as log_file:

            def checkpoint(epoch: int, loss: float, train_state: dict, **extra: Any) -> None:
                torch.save({"model": model.state_dict(), "train": train_state, **extra}, ckpt.with_suffix(".tmp"))
                ckpt.with_suffix(".tmp").replace(ckpt)  # atomic: a kill never leaves half a checkpoint
                log_file.write(f"epoch {epoch + 1}/{epochs} loss {loss:.4f} ({time.perf_counter() - t0:.0f}s)\n")
                log_file.flush()

            what = f"{len(victim.indices)} poisoned with {trigger!r}" if trigger is not None else "clean (no attack)"
            logger.info(f"training {arch} on {len(victim.images)} {dataset} images, {what}")
            strategy.train(model, victim, run, saved, checkpoint)
        trigger = strategy.trigger  # a trigger trained with the model (IAB) is the trained one
        metrics = evaluate(model, test.images, test.labels, trigger, num_classes)
        logger.info("test split: " + "  ".join(f"{k.upper()} {100 * metrics[k]:.2f}%" for k in ("acc", "asr", "ra") if k in metrics)
            + "".join(f"  {k} {100 * v:.1f}%" for k, v in metrics.items() if k.startswith("asr:")))
        record = _write_results(model, run, arch, dataset, len(train), (mean, std), trigger, victim, metrics, t0)
        ckpt.unlink(missing_ok=True)
        return record


def _checkpoint_of(model: nn.Module, run: AttackRun) -> dict[str, Any] | None:
    """A resumed run's checkpoint, its weights loaded into ``model``; None for a fresh start."""
    ckpt = run.out / CHECKPOINT
    if run.resume and ckpt.exists():
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # our own file, still never unpickled
        model.load_state_dict(saved["model"])
        logger.info(f"resuming from epoch {saved['train']['epoch']} of {run.epochs}")
        return saved
    if run.resume:
        logger.info(f"no checkpoint in {run.out}; starting from scratch")
    return None


def _write_results(model: nn.Module, run: AttackRun, arch: str, dataset: str, train_size: int,
                   normalization: tuple[list[float], list[float]], trigger: Trigger | None, victim: VictimSet,
                   metrics: dict[str, float], t0: float) -> dict[str, Any]:
    """Write ``model.safetensors`` with its card and ``metrics.json``; returns the record."""
    spec = trigger.spec() if trigger is not None else None
    mean, std = normalization
    card = ModelCard(arch, run.num_classes, list(run.shape), {"mean": mean, "std": std}, metadata={
        "attack": spec, "poison_ratio": run.poison_ratio if trigger is not None else 0.0,
        "poisoned_indices": victim.indices,
        "poisoned_by_component": victim.owner if len(set(victim.owner)) > 1 else None,
        "noise_indices": victim.noise or None,
        "dataset": dataset, "train_size": train_size, "victim_train_size": len(victim.images), "epochs": run.epochs,
        "seed": run.seed, "test": metrics,
        "training": {"optimizer": "adam", "lr": run.lr, "lr_schedule": run.lr_schedule, "augment": run.augment,
                     "batch_size": run.batch_size},
        "definitions": DEFINITIONS, "environment": environment(),
    })
    save_model(model.cpu(), run.out / "model.safetensors", card)
    record = new_record("train", dataset=dataset, attack=spec, poison_ratio=card.metadata["poison_ratio"],
                        epochs=run.epochs, train_size=train_size, victim_train_size=len(victim.images), arch=arch,
                        seed=run.seed, lr=run.lr, lr_schedule=run.lr_schedule, augment=run.augment, test=metrics,
                        seconds=time.perf_counter() - t0)
    write_record(run.out / "metrics.json", record)
    return record
