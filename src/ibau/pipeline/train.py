"""Train a poisoned model: what ``ibau attack`` adapts. Resumable from the last finished epoch."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..attacks import ATTACKS, build_attack, make_trigger, parse_attack, poison
from ..attacks.base import Trigger
from ..attacks.inputaware import InputAware
from ..attacks.io import load_trigger, save_trigger
from ..data import ImageSet, load_dataset
from ..metrics import DEFINITIONS, evaluate
from ..models import ModelCard, build_model, load_model, save_model
from ..records import new_record, write_record
from ..training import RECIPES, check_augment, check_lr_schedule, recipe, train_classifier  # noqa: F401 (re-exported)
from ..utils import environment, resolve_device, seeded_rng

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
                    steps: int | None = None, options: dict | None = None) -> Trigger | None:
    """The trigger of an ``ibau attack`` run: a saved ``trigger_file``; ``"none"`` (a clean model); or
    the ``--attack`` text, generating optimised triggers against ``reference_model`` on a seeded
    sample of the training images (``steps`` optimisation steps; default: each trigger's)."""
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
    return build_attack(entries, model, images, seed=seed, steps=steps)


POISONS = "poisons.safetensors"


def _poisoned(train: ImageSet, trigger: Trigger, ratio: float, num_classes: int, seed: int, stored: Path,
              resume: bool):
    """The poisoned training set; crafted (clean-label) poisons are saved to ``stored`` so a resumed run
    reuses them (crafting needs the reference model, which a resumed run does not load)."""
    from safetensors.torch import load_file, save_file

    from ..attacks import PoisonedSet

    crafted = any(part.clean_label for part in trigger.components())
    if crafted and resume and stored.exists():
        saved = load_file(str(stored))
        images = train.images.clone()
        images[saved["indices"]] = saved["images"]
        return PoisonedSet(images, train.labels.clone(), saved["indices"], saved["component"])
    p = poison(train.images, train.labels, trigger, ratio, num_classes=num_classes, seed=seed)
    if crafted:
        save_file({"indices": p.indices.contiguous(), "images": p.images[p.indices].contiguous(),
                   "component": p.component.contiguous()}, str(stored))
    return p


def restamper(clean: torch.Tensor, poisoned, trigger: Trigger):
    """For training with augmentation: the source images (the poisoned set with each stamped row put back
    to its clean image) and ``stamp(x, rows)``, which re-applies each row's trigger after the augmentation,
    so the trigger sits where it will at test time. Noise-mode and crafted (clean-label) rows are augmented
    as they are."""
    parts = trigger.components()
    owner = torch.full((len(clean),), -1, dtype=torch.long)
    stamped = torch.tensor([not parts[k].clean_label for k in poisoned.component.tolist()], dtype=torch.bool)
    owner[poisoned.indices[stamped]] = poisoned.component[stamped]
    source = torch.where((owner >= 0).view(-1, 1, 1, 1), clean, poisoned.images)

    def stamp(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        who = owner[rows.cpu()]
        for k in who[who >= 0].unique().tolist():
            hit = (who == k).to(x.device)
            x[hit] = parts[k].apply(x[hit]).to(x.dtype)
        return x

    return source, stamp


def _through(stamp, kept: torch.Tensor):
    """``stamp`` for a victim that trains on the subset ``kept`` of the training rows."""
    return lambda x, rows: stamp(x, kept[rows.cpu()])


def train_poisoned(dataset: str, attack: str | Trigger | None, out: str | Path, data_dir: str | None = None,
                   download: bool = False, poison_ratio: float = 0.2, epochs: int = 50, arch: str = "small_vgg",
                   train_limit: int | None = None, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                   device: str | None = None, resume: bool = False, progress: bool = True,
                   target: int | None = None, all_to_all: bool = False, reference_model: str | Path | None = None,
                   trigger_file: str | Path | None = None, trigger_steps: int | None = None,
                   trigger_options: dict | None = None, lr_schedule: str = "constant", augment: str = "none") -> dict[str, Any]:
    """Poison ``dataset``'s training split with ``attack``, train ``arch`` on it, and write ``out/``:
    ``model.safetensors`` + card (attack spec, poisoned indices, ACC/ASR/RA on the test split),
    ``trigger.json`` + ``trigger*.png`` (written before training), ``train.log``, ``metrics.json`` and,
    while training, ``checkpoint.pt``.

    ``attack`` is a :class:`Trigger`, ``--attack`` text (see :func:`ibau.attacks.parse_attack`) or
    ``"none"`` for a clean model by the same recipe. With ``resume=True`` an interrupted run reuses its
    saved trigger and continues from its last finished epoch (same result as an uninterrupted one on CPU).
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
        c, h, w = train.shape
        ckpt = out / CHECKPOINT
        if resume and ckpt.exists() and (out / "trigger.json").exists():
            trigger = load_trigger(out / "trigger.json")
        elif resume and ckpt.exists() and attack in (None, "none"):
            trigger = None
        else:
            trigger = prepare_trigger(attack, train.images, target, all_to_all, reference_model, trigger_file,
                                      seed=seed, device=device, steps=trigger_steps,
                                      options=trigger_options)
            if trigger is not None:
                save_trigger(trigger, (c, h, w), out)
        if trigger is not None and trigger.trains_with_model and lr_schedule != "constant":
            raise ValueError(f"{trigger.name} trains its own networks with the model at a constant rate; drop --lr-schedule {lr_schedule}")
        if trigger is not None and trigger.trains_with_model and augment != "none":
            raise ValueError(f"{trigger.name} poisons its own batches as it trains; drop --augment {augment}")
        stamp = None
        if trigger is None or trigger.trains_with_model:  # an input-aware trigger poisons each batch as it trains
            images, labels, indices, owner, noise = train.images, train.labels, [], [], []
        else:
            p = _poisoned(train, trigger, poison_ratio, num_classes, seed, out / POISONS, resume)
            images, labels, indices, owner = p.images, p.labels, p.indices.tolist(), p.component.tolist()
            noise = p.noise_indices.tolist()
            if augment != "none":
                images, stamp = restamper(train.images, p, trigger)
        rows = trigger.victim_rows(labels, torch.as_tensor(indices, dtype=torch.long), seed) if trigger is not None else None
        if rows is not None:  # e.g. HT's victim fine-tunes on a small clean set plus the poisons
            images, labels = images[rows], labels[rows]
            if stamp is not None:  # the victim's row i is training row rows[i]
                stamp = _through(stamp, rows)
            logger.info(f"the victim trains on {len(rows)} of the {len(train)} poisoned training images ({len(indices)} poisons)")
        victim_set = len(images)
        mean, std = channel_stats(train.images)
        model = build_model(arch, num_classes=num_classes, in_channels=c, input_size=h, mean=mean, std=std)
        state = None
        if resume and ckpt.exists():
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)  # our own file, still never unpickled
            model.load_state_dict(saved["model"])
            state = saved["train"]
            if "trigger" in saved:  # a trigger trained with the model continues from the same epoch
                trigger = make_trigger(**saved["trigger"])
            logger.info(f"resuming from epoch {state['epoch']} of {epochs}")
        elif resume:
            logger.info(f"no checkpoint in {out}; starting from scratch")
        # a victim that fine-tunes the reference model (HT) starts from its weights unless a checkpoint took over
        trainable = trigger.victim_start(model, load_reference=state is None) if trigger is not None else None
        log_file = (out / "train.log").open("a")
        t0 = time.perf_counter()

        def on_epoch(epoch: int, loss: float, train_state: dict) -> None:
            extra = {"trigger": trigger.spec()} if trigger is not None and trigger.trains_with_model else {}
            torch.save({"model": model.state_dict(), "train": train_state, **extra}, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)  # atomic: a kill never leaves half a checkpoint
            line = f"epoch {epoch + 1}/{epochs} loss {loss:.4f} ({time.perf_counter() - t0:.0f}s)"
            log_file.write(line + "\n")
            log_file.flush()

        what = f"{len(indices)} poisoned with {trigger!r}" if trigger is not None else "clean (no attack)"
        logger.info(f"training {arch} on {victim_set} {dataset} images, {what}")
        try:
            if isinstance(trigger, InputAware):  # the only trigger trained with the model (trains_with_model)
                done = state["epoch"] if state else 0
                if done > 0:
                    logger.info("an input-aware trigger resumes with its networks from the checkpoint; the mask network is not re-trained")
                    trigger.mask_epochs = 0
                trigger.fit(model, images, labels, num_classes, poison_ratio=poison_ratio, epochs=epochs - done, lr=lr,
                            batch_size=batch_size, seed=seed + done, device=dev, progress=progress,
                            on_epoch=lambda e, loss, st: on_epoch(e + done, loss, {"epoch": e + 1 + done}))
                save_trigger(trigger, (c, h, w), out)  # the trained networks
            else:
                train_classifier(model, ImageSet(images, labels), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                 device=str(dev), progress=progress, on_epoch=on_epoch, resume=state,
                                 lr_schedule=lr_schedule, trainable=trainable, augment=augment, stamp=stamp,
                                 desc=f"train ({trigger.name if trigger is not None else 'clean'})")
        finally:
            log_file.close()
        metrics = evaluate(model, test.images, test.labels, trigger, num_classes)
        logger.info("test split: " + "  ".join(f"{k.upper()} {100 * metrics[k]:.2f}%" for k in ("acc", "asr", "ra") if k in metrics)
            + "".join(f"  {k} {100 * v:.1f}%" for k, v in metrics.items() if k.startswith("asr:")))
        spec = trigger.spec() if trigger is not None else None
        card = ModelCard(arch, num_classes, [c, h, w], {"mean": mean, "std": std}, metadata={
            "attack": spec, "poison_ratio": poison_ratio if trigger is not None else 0.0,
            "poisoned_indices": indices, "poisoned_by_component": owner if len(set(owner)) > 1 else None,
            "noise_indices": noise or None,
            "dataset": dataset, "train_size": len(train), "victim_train_size": victim_set, "epochs": epochs, "seed": seed,
            "test": metrics,
            "training": {"optimizer": "adam", "lr": lr, "lr_schedule": lr_schedule, "augment": augment,
                         "batch_size": batch_size},
            "definitions": DEFINITIONS, "environment": environment(),
        })
        save_model(model.cpu(), out / "model.safetensors", card)
        record = new_record("train", dataset=dataset, attack=spec, poison_ratio=card.metadata["poison_ratio"],
                            epochs=epochs, train_size=len(train), victim_train_size=victim_set, arch=arch, seed=seed,
                            lr=lr, lr_schedule=lr_schedule, augment=augment, test=metrics,
                            seconds=time.perf_counter() - t0)
        write_record(out / "metrics.json", record)
        ckpt.unlink(missing_ok=True)
        return record
