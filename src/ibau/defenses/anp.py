"""Adversarial Neuron Pruning: learn a mask per neuron under adversarial neuron perturbations, prune the small ones.

Wu and Wang, "Adversarial Neuron Pruning Purifies Backdoored Deep Models", NeurIPS 2021,
https://arxiv.org/abs/2110.14430 (authors' code: https://github.com/csdongxian/ANP_backdoor; BackdoorBench's
``defense/anp.py`` runs the same procedure). A backdoored network collapses onto its target class when a few
neurons are perturbed; ANP finds those neurons on the defender's clean images and prunes them.

A *neuron* is one channel of an affine normalisation layer (BatchNorm, as the authors; GroupNorm is accepted
too, it has the same per-channel scale and shift): its output is ``γ_k · x̂_k + β_k``. Under a mask ``m`` and a
perturbation ``(δ, ξ)`` it becomes ``γ_k (m_k + δ_k) x̂_k + β_k (1 + ξ_k)``.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..data.arrays import ImageSet
from ..metrics import accuracy
from .base import Defense, DefenseResult
from .config import DefenseConfig, setting

logger = logging.getLogger(__name__)

#: Layers whose channels are ANP's neurons (affine ones only).
NEURON_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)

#: ``(name, module)`` of a normalisation layer; typed ``Any`` because its ``weight``/``bias`` are tensors.
Layer = tuple[str, Any]

def _flag(default: bool) -> Any:
    """A true/false setting (``--defense-option NAME=true``)."""
    return setting(default, test=lambda v: isinstance(v, bool), must="true or false")


@dataclass(frozen=True)
class ANPConfig(DefenseConfig):
    """Options of :class:`ANP`. Defaults are the paper's (§4.1) and the authors' code's.

    Neuron perturbation (the inner maximisation):
        eps: ε, the budget of the relative perturbation of each neuron's scale (δ) and shift (ξ) (default 0.4,
            the paper's). 0 learns the masks on the clean loss alone (no perturbation).
        steps: sign-gradient ascent steps on (δ, ξ) per batch, each of size ε / steps, from a uniform draw in
            [−ε, ε] (default 1, the paper's one-step attack).
        project: clip (δ, ξ) back to [−ε, ε] after each step, the constraint of the paper's problem (default
            False: the authors' code does not clip, so one step from the random start reaches up to 2ε).
    Mask learning (the outer minimisation):
        alpha: α, the weight of the clean loss; 1 − α weighs the loss under perturbation (default 0.2).
        iterations: mask updates (default 2000), each on ``batch_size`` clean images drawn with replacement
            (default 128), as the authors' sampler.
        lr, momentum: SGD on the masks (default 0.2 and 0.9); the masks start at 1 and stay in [0, 1].
        batch_stats: BatchNorm normalises with each batch's statistics while the masks are learnt (default
            True: the authors' code learns them in train mode); every other layer (dropout) is in eval mode.
            False uses the running statistics.
    Pruning:
        prune_by: ``"search"`` (default: the threshold chosen on the clean set, :func:`search_threshold`: the
            largest of 0, ``threshold_step``, …, ``max_threshold`` (default 0.05 and 0.9, BackdoorBench's
            ``pruning_step`` and ``pruning_max``) before the clean set's accuracy first falls by ``acc_ratio``
            of itself or more (default 0.1, BackdoorBench's)), ``"threshold"`` (the paper's fixed rule: every
            neuron whose mask is <= ``threshold``, default 0.2) or ``"fraction"`` (the ``fraction`` of all
            neurons with the smallest masks, default 0.05, rounded up). A pruned neuron's scale γ is set to 0
            (its channel then outputs its shift β, as the authors' pruning does); the other weights are untouched.
            BackdoorBench sweeps the same thresholds but keeps the one with the lowest ASR on *triggered test
            images*: a choice no defender can make, which ``"search"`` replaces by the clean set alone.
    Run:
        checkpoint_every: every this many iterations, the model pruned with the masks so far is reported to the
            callback (default 500, the authors' report interval; None: only the final model).
        seed: the batch draws and the random starts of (δ, ξ) (default 0); device: ``None`` uses CUDA when
            available.
    """

    eps: float = setting(0.4, ge=0, hint="the paper uses 0.4; 0 learns the masks without perturbation")
    steps: int = setting(1, ge=1)
    project: bool = _flag(False)
    alpha: float = setting(0.2, ge=0, le=1, hint="the paper uses 0.2")
    iterations: int = setting(2000, ge=1)
    batch_size: int = setting(128, ge=1)
    lr: float = setting(0.2, gt=0, hint="the paper uses 0.2")
    momentum: float = setting(0.9, ge=0, lt=1, hint="e.g. 0.9")
    batch_stats: bool = _flag(True)
    prune_by: str = setting("search", choices=("search", "threshold", "fraction"))
    threshold: float = setting(0.2, ge=0, le=1, hint="the paper prunes masks <= 0.2")
    fraction: float = setting(0.05, gt=0, lt=1, hint="e.g. 0.05 of all neurons")
    max_threshold: float = setting(0.9, ge=0, le=1, hint="BackdoorBench sweeps up to 0.9")
    threshold_step: float = setting(0.05, gt=0, le=1, hint="BackdoorBench steps by 0.05")
    acc_ratio: float = setting(0.1, gt=0, lt=1, hint="BackdoorBench tolerates 0.1: 10% of the clean accuracy")
    checkpoint_every: int | None = setting(500, ge=1, optional=True, hint="None reports the final model only")


def neuron_layers(model: nn.Module) -> list[Layer]:
    """``(name, module)`` of every affine BatchNorm/GroupNorm layer of ``model``, in ``named_modules`` order."""
    return [(name, m) for name, m in model.named_modules()
            if name and isinstance(m, NEURON_LAYERS) and getattr(m, "weight", None) is not None
            and getattr(m, "bias", None) is not None]


def perturbed_forward(model: nn.Module, layers: list[Layer], x: torch.Tensor, mask: torch.Tensor,
                      noise_scale: torch.Tensor | None = None, noise_shift: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of ``model(x)`` with each neuron's scale multiplied by ``mask + noise_scale`` and its shift by
    ``1 + noise_shift``. ``mask`` and the noises are flat vectors over all neurons of ``layers`` (in order);
    ``noise_* = None`` means no perturbation. Gradients flow to the mask and the noises, not to ``model``.
    """
    sizes = [m.weight.numel() for _, m in layers]
    scale = mask if noise_scale is None else mask + noise_scale
    shift = None if noise_shift is None else 1 + noise_shift
    params: dict[str, torch.Tensor] = {}
    for i, ((name, module), s) in enumerate(zip(layers, scale.split(sizes))):
        params[f"{name}.weight"] = module.weight.detach() * s
        bias = module.bias.detach()
        params[f"{name}.bias"] = bias if shift is None else bias * shift.split(sizes)[i]
    return functional_call(model, params, (x,))


def pruned_neurons(mask: torch.Tensor, prune_by: str, threshold: float, fraction: float) -> torch.Tensor:
    """Flat indices of the neurons to prune: mask <= threshold, or the ``fraction`` with the smallest masks
    (rounded up; ties in index order). Sorted by mask value, smallest first."""
    order = torch.sort(mask.detach().cpu(), stable=True).indices
    if prune_by == "threshold":
        return order[mask.detach().cpu()[order] <= threshold]
    return order[:math.ceil(fraction * mask.numel())]


def search_threshold(model: nn.Module, layers: list[Layer], mask: torch.Tensor, clean: ImageSet,
                     max_threshold: float, step: float, acc_ratio: float) -> tuple[float | None, dict[str, Any]]:
    """The pruning threshold a defender can choose from its clean set: for t = 0, ``step``, …, ``max_threshold``,
    prune the neurons with mask <= t and score ``model`` on ``clean``; stop at the first t whose accuracy has
    lost ``acc_ratio`` of the unpruned accuracy or more, and return the t before it (None: even t = 0 loses
    that much, so nothing is pruned) with ``{"clean_acc": unpruned, "sweep": [{threshold, pruned, clean_acc}]}``.
    ``model``'s weights are as they were afterwards.
    """
    saved = [m.weight.detach().clone() for _, m in layers]
    base = accuracy(model, clean.images, clean.labels)
    sweep: list[dict[str, Any]] = []
    chosen, last = None, None
    try:
        for k in range(int(math.floor(max_threshold / step + 1e-9)) + 1):
            t = round(k * step, 10)
            pruned = pruned_neurons(mask, "threshold", t, 0.0)
            if last is None or len(pruned) != last["pruned"]:  # the same neurons score the same
                _restore(layers, saved)
                zero_scales(layers, pruned)
                last = {"threshold": t, "pruned": int(len(pruned)), "clean_acc": accuracy(model, clean.images, clean.labels)}
            else:
                last = {**last, "threshold": t}
            sweep.append(last)
            if base - last["clean_acc"] >= acc_ratio * base:
                break
            chosen = t
    finally:
        _restore(layers, saved)
    return chosen, {"clean_acc": base, "sweep": sweep}


class ANP(Defense):
    """ANP from "Adversarial Neuron Pruning Purifies Backdoored Deep Models" (Wu and Wang, NeurIPS 2021,
    https://arxiv.org/abs/2110.14430). Arguments and defaults: :class:`ANPConfig`.

    1. The neurons are the channels of the model's affine normalisation layers (:func:`neuron_layers`; a model
       without one is refused with a one-line error: use ``fine_pruning`` or ``nad`` there).
    2. Masks ``m = 1``. For ``iterations`` batches of ``batch_size`` clean images (drawn with replacement):
       a. (δ, ξ) ~ U(−ε, ε) per neuron, then ``steps`` ascent steps ``+ ε/steps · sign(∇ CE)`` of the loss of
          the perturbed model (scale ``γ (m + δ)``, shift ``β (1 + ξ)``; :func:`perturbed_forward`);
       b. one SGD step on ``m`` of ``α · CE(m) + (1 − α) · CE(m + δ, 1 + ξ)``, then ``m`` clipped to [0, 1].
       This runs on a copy of the model (BatchNorm on batch statistics by default), whose weights never change.
    3. Prune: γ ← 0 for the neurons with a mask <= the threshold :func:`search_threshold` chose on the clean
       set (or <= ``threshold``, or the smallest ``fraction``: :func:`pruned_neurons`). Checkpoints:
       ``"iteration k"`` every ``checkpoint_every`` iterations (the model pruned with the masks of that moment,
       the threshold searched again; pruning is undone afterwards) and ``"pruned"``, the returned model.

    The returned model has the input's architecture and state_dict keys. No fine-tuning follows (as the paper).

    Cost: three forward and two backward passes of a batch per iteration, whatever the clean set's size; on the
    small VGG at 32×32 ~1 s per iteration at batch 128 (one thread of a busy 2-core machine), so ~30 min for the
    2000. Measured on the digits model of the tests (400 clean images), 200 iterations pruned 15 neurons and
    left ASR at 94% with BatchNorm on batch statistics, 33 neurons and ASR 61% on running statistics
    (``batch_stats=False``); ACC stayed within 0.3 points (both by the paper's threshold 0.2). The search scores
    the clean set once per distinct pruned set, at every checkpoint too (≈ 19 passes of inference at most).

    Shape: ``model`` maps N×C×H×W images in [0, 1] to N×K logits; ``clean`` holds N×C×H×W float images in
    [0, 1] and N int64 labels; the result's model has the input's architecture.

    ``DefenseResult.extra``: ``layers`` (names), ``neurons`` (total), ``masks`` (per layer, the final mask
    values), ``pruned`` (``[layer, channel, mask]`` in pruning order), ``pruned_count``, ``losses`` (mean clean
    and perturbed CE per checkpoint interval) and, with ``prune_by="search"``, ``search`` (the threshold chosen,
    the unpruned clean accuracy and the sweep: threshold, neurons pruned, clean accuracy).

    >>> anp = ANP(iterations=200, prune_by="fraction", fraction=0.02)
    >>> anp.config.eps, anp.config.alpha, anp.config.iterations
    (0.4, 0.2, 200)
    """

    name = "anp"
    label = "ANP"
    config_class = ANPConfig

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        layers = neuron_layers(model)
        if not layers:
            raise ValueError("anp needs affine BatchNorm (or GroupNorm) layers, whose channels it masks; this model "
                             "has none: use fine_pruning or nad for it")
        mask = self._learn_masks(model, clean, progress)
        pruned, search = self._select(model, mask, clean)
        zero_scales(layers, pruned)
        self.checkpoint(model, "pruned")
        names = [n for n, _ in layers]
        where = _locate(layers)
        per_layer = mask.detach().cpu().split([m.weight.numel() for _, m in layers])
        extra = {"layers": names, "neurons": int(mask.numel()),
                 "masks": {n: [round(float(v), 4) for v in vals] for n, vals in zip(names, per_layer)},
                 "pruned": [[where[int(i)][0], where[int(i)][1], round(float(mask[i]), 4)] for i in pruned],
                 "pruned_count": int(len(pruned)), "losses": self._losses}
        if search is not None:
            extra["search"] = search
        logger.info(f"anp: pruned {len(pruned)} of {mask.numel()} neurons")
        return DefenseResult(model=model.eval(), extra=extra)

    def _learn_masks(self, model: nn.Module, clean: ImageSet, progress: bool) -> torch.Tensor:
        """Step 2 on a copy of ``model``; returns the flat mask (on the device)."""
        c, dev = self.config, self._device
        work = copy.deepcopy(model)
        for p in work.parameters():
            p.requires_grad_(False)
        work.eval()
        if c.batch_stats:
            for m in work.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
        layers = neuron_layers(work)
        total = sum(m.weight.numel() for _, m in layers)
        mask = torch.ones(total, device=dev, requires_grad=True)
        opt = torch.optim.SGD([mask], lr=c.lr, momentum=c.momentum)
        gen = torch.Generator().manual_seed(c.seed)
        images, labels = clean.images, clean.labels
        self._losses: list[dict[str, float]] = []
        done, kept = self.kept_progress("masks")  # a run stopped after a report continues from it
        if kept is not None:
            with torch.no_grad():
                mask.copy_(kept["mask"].to(dev))
            opt.load_state_dict(kept["optimizer"])
            gen.set_state(kept["generator"])
            self._losses = list(kept["losses"])
        sums = {"nat": 0.0, "rob": 0.0, "n": 0}
        bar = tqdm(total=c.iterations, initial=done, desc="anp: masks", disable=not progress, leave=False)
        try:
            for it in range(done + 1, c.iterations + 1):
                rows = torch.randint(len(clean), (c.batch_size,), generator=gen)
                x, y = images[rows].to(dev), labels[rows].to(dev)
                loss_rob = torch.zeros((), device=dev)
                if c.eps > 0:
                    noise = (torch.rand(2, total, generator=gen) * 2 - 1).mul_(c.eps).to(dev)
                    for _ in range(c.steps):
                        noise.requires_grad_(True)
                        ce = F.cross_entropy(perturbed_forward(work, layers, x, mask.detach(), noise[0], noise[1]), y)
                        (grad,) = torch.autograd.grad(ce, noise)
                        noise = (noise.detach() + c.eps / c.steps * grad.sign())
                        if c.project:
                            noise = noise.clamp_(-c.eps, c.eps)
                    loss_rob = F.cross_entropy(perturbed_forward(work, layers, x, mask, noise[0], noise[1]), y)
                loss_nat = F.cross_entropy(perturbed_forward(work, layers, x, mask), y)
                loss = c.alpha * loss_nat + (1 - c.alpha) * loss_rob
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    mask.clamp_(0, 1)
                sums["nat"] += float(loss_nat.detach())
                sums["rob"] += float(loss_rob.detach())
                sums["n"] += 1
                bar.update(1)
                last = it == c.iterations
                if (c.checkpoint_every and it % c.checkpoint_every == 0) or last:
                    self._losses.append({"iteration": it, "ce": sums["nat"] / sums["n"], "ce_perturbed": sums["rob"] / sums["n"]})
                    bar.set_postfix(ce=f"{self._losses[-1]['ce']:.3f}", pert=f"{self._losses[-1]['ce_perturbed']:.3f}")
                    sums = {"nat": 0.0, "rob": 0.0, "n": 0}
                    if not last:
                        self._report(model, mask, clean, f"iteration {it}")
                        self.keep_progress("masks", it, lambda: {"mask": mask.detach(), "optimizer": opt.state_dict(),
                                                                 "generator": gen.get_state(), "losses": self._losses})
        finally:
            bar.close()
        return mask.detach()

    def _select(self, model: nn.Module, mask: torch.Tensor, clean: ImageSet) -> tuple[torch.Tensor, dict[str, Any] | None]:
        """The neurons to prune by ``prune_by``, and with ``"search"`` its record (threshold, sweep)."""
        c = self.config
        if c.prune_by != "search":
            return pruned_neurons(mask, c.prune_by, c.threshold, c.fraction), None
        chosen, search = search_threshold(model, neuron_layers(model), mask, clean, c.max_threshold,
                                          c.threshold_step, c.acc_ratio)
        pruned = pruned_neurons(mask, "threshold", chosen, 0.0) if chosen is not None else torch.zeros(0, dtype=torch.long)
        return pruned, {"threshold": chosen, **search}

    def _report(self, model: nn.Module, mask: torch.Tensor, clean: ImageSet, step: str) -> None:
        """Checkpoint the model pruned with the current masks (the threshold searched again), then undo the pruning."""
        layers = neuron_layers(model)
        saved = [m.weight.detach().clone() for _, m in layers]
        zero_scales(layers, self._select(model, mask, clean)[0])
        try:
            self.checkpoint(model, step)
        finally:
            _restore(layers, saved)


def _locate(layers: list[Layer]) -> list[tuple[str, int]]:
    """Flat neuron index -> (layer name, channel)."""
    return [(name, k) for name, m in layers for k in range(m.weight.numel())]


def _restore(layers: list[Layer], saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for (_, m), w in zip(layers, saved):
            m.weight.copy_(w)


def zero_scales(layers: list[Layer], flat: torch.Tensor) -> None:
    """Prune the neurons at the flat indices ``flat`` (over ``layers``, in order): their scale γ ← 0, in place."""
    where = _locate(layers)
    modules = dict(layers)
    with torch.no_grad():
        for i in flat.tolist():
            name, k = where[i]
            modules[name].weight[k] = 0
