"""How ``ibau attack`` poisons a victim's training: one strategy per trigger family.

A trigger declares its family in ``Trigger.poisoning``; :func:`poisoning_for` maps it to a strategy:

- ``"stamp"`` -> :class:`StampAndRelabel`: stamp a seeded fraction of the training set with the trigger and
  relabel it to the target (:func:`ibau.attacks.poison`; a multi-trigger splits the fraction between its
  parts, and WaNet's noise mode adds warped images with their true labels), then train the model on it.
- ``"craft"`` -> :class:`CraftedCleanLabel`: the same with poisons crafted against a reference model that keep
  their labels (HT). They are saved to ``poisons.safetensors`` so that a resumed run, which does not load
  the reference model, reuses them.
- ``"fit"`` -> :class:`TrainedWithModel`: no poisoned set; the trigger's networks are trained together with
  the model (IAB's ``fit``), and the checkpoint keeps them.
- no trigger -> :class:`Clean`: the training set as it is (a clean model by the same recipe).

:func:`ibau.pipeline.train.train_poisoned` runs any of them the same way: ``check`` (refuse options the family
cannot use), ``training_set`` (the rows the victim trains on and what was poisoned, for the model card), then,
with the model built and a checkpoint loaded, ``train``. The stamped and crafted families train with the shared
recipe (:func:`ibau.training.train_classifier`), through two trigger hooks: ``victim_rows`` (a subset of the
poisoned set; HT's small clean set plus its poisons) and ``victim_start`` (HT's victim fine-tunes the reference
model). The strategies live here, not in :mod:`ibau.attacks`, because they write files, resume from
checkpoints and run the training recipe; the triggers and :func:`~ibau.attacks.poison` stay pure.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import InputAware, PoisonedSet, make_trigger, poison
from ..attacks.base import Trigger
from ..attacks.io import save_trigger
from ..data import ImageSet
from ..training import train_classifier

logger = logging.getLogger(__name__)

#: Where a crafted (clean-label) attack's poisons are kept, in the run's folder.
POISONS = "poisons.safetensors"

#: ``checkpoint(epoch, loss, train_state, **extra)``: saves the model and ``train_state`` (plus ``extra``) after
#: an epoch and logs it; what ``train`` calls at the end of every epoch.
Checkpoint = Callable[..., None]


@dataclass(frozen=True)
class AttackRun:
    """What a strategy needs to know about one ``ibau attack`` run: its folder, whether it resumes, the
    images' shape and class count, and the training recipe (``train_poisoned``'s arguments)."""

    out: Path
    resume: bool
    shape: tuple[int, int, int]
    num_classes: int
    poison_ratio: float
    epochs: int
    lr: float
    batch_size: int
    lr_schedule: str
    augment: str
    seed: int
    device: torch.device
    progress: bool


@dataclass
class VictimSet:
    """The images and labels the victim trains on and what poisoning did to them: ``indices`` (poisoned rows
    of the training set), ``owner`` (the component of the trigger that poisoned each), ``noise`` (rows changed
    by a noise mode, labels kept), and ``stamp(x, rows)``, which re-stamps rows after augmentation."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    noise: list[int] = field(default_factory=list)
    stamp: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


class Poisoning:
    """A trigger family's way of poisoning the training of a model (see the module docstring). This base
    trains the model on a fixed training set with the shared recipe; subclasses say which set."""

    family = ""

    def __init__(self, trigger: Trigger | None):
        self.trigger = trigger

    def check(self, run: AttackRun) -> None:
        """Refuse recipe options the family cannot use (before anything is poisoned or trained)."""

    def training_set(self, train: ImageSet, run: AttackRun) -> VictimSet:
        """The rows the victim trains on (``train`` poisoned as the family does it)."""
        raise NotImplementedError

    def train(self, model: nn.Module, victim: VictimSet, run: AttackRun, saved: dict[str, Any] | None,
              checkpoint: Checkpoint) -> None:
        """Train ``model`` on ``victim``, continuing from ``saved`` (the checkpoint, already loaded into the
        model's weights) when the run resumes, and ``checkpoint`` after every epoch."""
        trigger = self.trigger
        # a victim that fine-tunes the reference model (HT) starts from its weights unless a checkpoint took over
        trainable = trigger.victim_start(model, load_reference=saved is None) if trigger is not None else None
        train_classifier(model, ImageSet(victim.images, victim.labels), epochs=run.epochs, lr=run.lr,
                         batch_size=run.batch_size, seed=run.seed, device=str(run.device), progress=run.progress,
                         on_epoch=checkpoint, resume=saved["train"] if saved is not None else None,
                         lr_schedule=run.lr_schedule, trainable=trainable, augment=run.augment, stamp=victim.stamp,
                         desc=f"train ({trigger.name if trigger is not None else 'clean'})")


class Clean(Poisoning):
    """No attack: the training set as it is."""

    family = "none"

    def training_set(self, train: ImageSet, run: AttackRun) -> VictimSet:
        return VictimSet(train.images, train.labels)


class StampAndRelabel(Poisoning):
    """Stamp a seeded ``poison_ratio`` of the training set and relabel it (:func:`ibau.attacks.poison`)."""

    family = "stamp"
    trigger: Trigger

    def poisoned_set(self, train: ImageSet, run: AttackRun) -> PoisonedSet:
        return poison(train.images, train.labels, self.trigger, run.poison_ratio, num_classes=run.num_classes,
                      seed=run.seed)

    def training_set(self, train: ImageSet, run: AttackRun) -> VictimSet:
        p = self.poisoned_set(train, run)
        images, labels, stamp = p.images, p.labels, None
        if run.augment != "none":  # augment the clean image, then stamp: the trigger stays where it is at test time
            images, stamp = restamper(train.images, p, self.trigger)
        rows = self.trigger.victim_rows(labels, p.indices, run.seed)
        if rows is not None:  # e.g. HT's victim fine-tunes on a small clean set plus the poisons
            images, labels = images[rows], labels[rows]
            if stamp is not None:  # the victim's row i is training row rows[i]
                stamp = _through(stamp, rows)
            logger.info(f"the victim trains on {len(rows)} of the {len(train)} poisoned training images "
                        f"({len(p.indices)} poisons)")
        return VictimSet(images, labels, p.indices.tolist(), p.component.tolist(), p.noise_indices.tolist(), stamp)


class CraftedCleanLabel(StampAndRelabel):
    """Clean-label poisons crafted against a reference model (HT), saved to ``poisons.safetensors`` and reused
    when the run resumes (crafting needs the reference model, which a resumed run does not load). A
    multi-trigger with a crafted part is poisoned this way too; its other parts are stamped."""

    family = "craft"

    def poisoned_set(self, train: ImageSet, run: AttackRun) -> PoisonedSet:
        return crafted_poisons(train, self.trigger, run.poison_ratio, run.num_classes, run.seed, run.out / POISONS,
                               run.resume)


class TrainedWithModel(Poisoning):
    """No poisoned set: the trigger's networks train together with the model (IAB's ``fit``, which poisons each
    batch as it goes). The checkpoint keeps the networks; the trained trigger is saved again at the end."""

    family = "fit"
    trigger: Trigger

    def check(self, run: AttackRun) -> None:
        name = self.trigger.name
        if run.lr_schedule != "constant":
            raise ValueError(f"{name} trains its own networks with the model at a constant rate; drop --lr-schedule {run.lr_schedule}")
        if run.augment != "none":
            raise ValueError(f"{name} poisons its own batches as it trains; drop --augment {run.augment}")

    def training_set(self, train: ImageSet, run: AttackRun) -> VictimSet:
        return VictimSet(train.images, train.labels)

    def train(self, model: nn.Module, victim: VictimSet, run: AttackRun, saved: dict[str, Any] | None,
              checkpoint: Checkpoint) -> None:
        trigger = make_trigger(**saved["trigger"]) if saved is not None and "trigger" in saved else self.trigger
        assert isinstance(trigger, InputAware), "the one trigger trained with the model so far"
        self.trigger = trigger  # the networks as the checkpoint left them
        done = saved["train"]["epoch"] if saved is not None else 0
        if done > 0:
            logger.info("an input-aware trigger resumes with its networks from the checkpoint; the mask network is not re-trained")
            trigger.mask_epochs = 0
        trigger.fit(model, victim.images, victim.labels, run.num_classes, poison_ratio=run.poison_ratio,
                    epochs=run.epochs - done, lr=run.lr, batch_size=run.batch_size, seed=run.seed + done,
                    device=run.device, progress=run.progress,
                    on_epoch=lambda e, loss, st: checkpoint(e + done, loss, {"epoch": e + 1 + done}, trigger=trigger.spec()))
        save_trigger(trigger, run.shape, run.out)  # the trained networks


#: ``Trigger.poisoning`` -> its strategy.
STRATEGIES: dict[str, type[Poisoning]] = {cls.family: cls for cls in (StampAndRelabel, CraftedCleanLabel, TrainedWithModel)}


def poisoning_for(trigger: Trigger | None) -> Poisoning:
    """The strategy that poisons a model's training with ``trigger`` (None: :class:`Clean`)."""
    if trigger is None:
        return Clean(None)
    if trigger.poisoning not in STRATEGIES:
        raise ValueError(f"{trigger.name} declares poisoning {trigger.poisoning!r}; use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[trigger.poisoning](trigger)


def crafted_poisons(train: ImageSet, trigger: Trigger, ratio: float, num_classes: int, seed: int, stored: Path,
                    resume: bool) -> PoisonedSet:
    """:func:`~ibau.attacks.poison` for a trigger with crafted poisons, which are saved to ``stored``; a resumed
    run (``resume``) reads them back from there instead of crafting them again."""
    from safetensors.torch import load_file, save_file

    if resume and stored.exists():
        saved = load_file(str(stored))
        images = train.images.clone()
        images[saved["indices"]] = saved["images"]
        return PoisonedSet(images, train.labels.clone(), saved["indices"], saved["component"])
    p = poison(train.images, train.labels, trigger, ratio, num_classes=num_classes, seed=seed)
    save_file({"indices": p.indices.contiguous(), "images": p.images[p.indices].contiguous(),
               "component": p.component.contiguous()}, str(stored))
    return p


def restamper(clean: torch.Tensor, poisoned: PoisonedSet, trigger: Trigger):
    """For training with augmentation: the source images (the poisoned set with each stamped row put back
    to its clean image) and ``stamp(x, rows)``, which re-applies each row's trigger after the augmentation,
    so the trigger sits where it will at test time. Noise-mode and crafted (clean-label) rows are augmented
    as they are."""
    parts = trigger.components()
    owner = torch.full((len(clean),), -1, dtype=torch.long)
    stamped = torch.tensor([parts[k].poisoning != "craft" for k in poisoned.component.tolist()], dtype=torch.bool)
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
