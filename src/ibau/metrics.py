"""Metrics of SPEC §4: ACC, ASR, RA, per-trigger ASR, DER, and the failure rule.

Definitions (recorded with every result, see :data:`DEFINITIONS`):
- ACC: top-1 accuracy on clean held-out test images (never the defender's clean set).
- ASR: of the held-out images whose true label is not the target, stamped with the trigger, the fraction
  classified as the target; all-to-all: the fraction classified as (y + 1) mod C.
- RA: the same stamped images, fraction classified as their true label.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .attacks.base import Trigger
from .utils import eval_mode

logger = logging.getLogger(__name__)

DEFINITIONS = {
    "acc": "top-1 accuracy on clean held-out test images, disjoint from the defender's clean set",
    "asr": ("fraction of triggered held-out images whose true label is not the target that are classified as the target "
            "(all-to-all: as (y+1) mod C)"),
    "ra": "fraction of the same triggered images classified as their true label",
    "der": "(max(0, ASR_before - ASR_after) - max(0, ACC_before - ACC_after) + 1) / 2, as in BackdoorBench",
    "failed": "ASR >= 20% or ACC drop > 10 points",
    "time_to_effect": "defense wall time (evaluation excluded) until held-out ASR first falls below 20%",
}


@torch.inference_mode()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 100, device=None) -> torch.Tensor:
    """Predicted classes for ``images``, in eval mode (the model's mode is restored afterwards).

    Batches of 100 by default: on a CPU a small VGG's forward pass is about 1.4× faster per image than in batches
    of 512 (its activations stay in cache), with the same predictions (``benchmarks/predict_batch.py``)."""
    dev = device or next(model.parameters()).device
    with eval_mode(model):
        preds = [model(images[i:i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **kw) -> float:
    return float((predict(model, images, **kw) == labels).float().mean())


def _triggered(images, labels, trigger: Trigger):
    keep = trigger.victims(labels)
    if not keep.any():
        raise ValueError("no held-out image has a label other than the attack target; ASR is undefined")
    return trigger.apply(images[keep]), labels[keep]


def attack_metrics(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, trigger: Trigger,
                   num_classes: int, **kw) -> dict[str, float]:
    """``{"asr", "ra"}`` for one trigger on held-out images."""
    x, y = _triggered(images, labels, trigger)
    pred = predict(model, x, **kw)
    target = trigger.target_labels(y, num_classes)
    return {"asr": float((pred == target).float().mean()), "ra": float((pred == y).float().mean())}


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, trigger: Trigger | None,
             num_classes: int, **kw) -> dict[str, float]:
    """``{"acc", "asr", "ra"}`` (ASR/RA only with a trigger).

    A multi-trigger attack also gets ``"asr:<name>"`` and ``"ra:<name>"`` per component; its ``"asr"``
    and ``"ra"`` are then the means over components (SPEC §4).
    """
    out = {"acc": accuracy(model, images, labels, **kw)}
    if trigger is None:
        return out
    parts = trigger.components()
    if len(parts) == 1:
        out.update(attack_metrics(model, images, labels, parts[0], num_classes, **kw))
        return out
    asr, ra = [], []
    for t in parts:
        key, i = t.name, 1
        while f"asr:{key}" in out:  # the same family twice (e.g. two targets): badnets, badnets_2
            i += 1
            key = f"{t.name}_{i}"
        m = attack_metrics(model, images, labels, t, num_classes, **kw)
        out[f"asr:{key}"], out[f"ra:{key}"] = m["asr"], m["ra"]
        asr.append(m["asr"])
        ra.append(m["ra"])
    out["asr"], out["ra"] = sum(asr) / len(asr), sum(ra) / len(ra)
    return out


def per_trigger_asr(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    triggers: Iterable[Trigger], num_classes: int, **kw) -> dict[str, float]:
    """ASR of each trigger (keyed by name, suffixed when repeated) and their mean under ``"mean"``."""
    out: dict[str, float] = {}
    for trig in triggers:
        key, i = trig.name, 1
        while key in out:
            i += 1
            key = f"{trig.name}_{i}"
        out[key] = attack_metrics(model, images, labels, trig, num_classes, **kw)["asr"]
    if not out:
        raise ValueError("per_trigger_asr needs at least one trigger")
    out["mean"] = sum(out.values()) / len(out)
    return out


def der(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Defense effectiveness rating (BackdoorBench): (max(0, ΔASR) − max(0, ΔACC) + 1) / 2, Δ = before − after;
    None for a model without a trigger (a clean model has no ASR)."""
    if "asr" not in before or "asr" not in after:
        return None
    d_asr = before["asr"] - after["asr"]
    d_acc = before["acc"] - after["acc"]
    return (max(0.0, d_asr) - max(0.0, d_acc) + 1) / 2


def failed(before: dict[str, float], after: dict[str, float]) -> bool | None:
    """The paper's failure rule: ASR ≥ 20% or a clean-accuracy drop of more than 10 points; None without
    an ASR (a clean model)."""
    if "asr" not in after:
        return None
    return after["asr"] >= 0.20 or (before["acc"] - after["acc"]) > 0.10


class EffectMonitor:
    """The shared evaluation callback of every defense: ``monitor(model, seconds)`` measures held-out
    ACC/ASR and remembers the defense time at which ASR first fell below ``threshold`` (time-to-effect,
    SPEC §4) and the ACC then. Defenses call it with their clock paused, so evaluation is not counted.
    ``report=True`` logs one line per checkpoint (what a background run without progress bars shows).

    >>> m = EffectMonitor(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long), None, 10)
    >>> m.time_to_effect is None
    True
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, trigger: Trigger | None, num_classes: int,
                 threshold: float = 0.20, report: bool = False):
        self.images, self.labels, self.trigger, self.num_classes = images, labels, trigger, num_classes
        self.report = report
        self.threshold = threshold
        self.time_to_effect: float | None = None
        self.acc_at_effect: float | None = None

    def __call__(self, model: nn.Module, seconds: float) -> dict[str, float]:
        m = evaluate(model, self.images, self.labels, self.trigger, self.num_classes)
        if self.time_to_effect is None and "asr" in m and m["asr"] < self.threshold:
            self.time_to_effect, self.acc_at_effect = seconds, m["acc"]
        if self.report:
            logger.info(f"  at {seconds:.1f}s: " + "  ".join(f"{k.upper()} {100 * v:.1f}%" for k, v in m.items()))
        return m

    def replay(self, entry: dict[str, Any]) -> None:
        """Take in a checkpoint measured by an earlier process (a history entry: ``seconds`` and what
        :meth:`__call__` returned), as if measured now: a resumed defense keeps its time to effect."""
        if self.time_to_effect is None and "asr" in entry and entry["asr"] < self.threshold:
            self.time_to_effect, self.acc_at_effect = entry["seconds"], entry["acc"]
