"""FT-SAM: fine-tune on the clean set with (adaptive) sharpness-aware minimisation.

Zhu, Wei, Shen, Fan and Wu, "Enhancing Fine-Tuning Based Backdoor Defense with Sharpness-Aware Minimization",
ICCV 2023, https://arxiv.org/abs/2304.11823 (code: BackdoorBench's ``defense/ft-sam.py`` with
``utils/defense_utils/sam``, https://github.com/SCLBD/BackdoorBench; defaults from its
``config/defense/ft-sam/config.yaml``).

Plain fine-tuning on a little clean data barely moves the neurons that carry a backdoor. The paper observes
that those neurons have large weight norms and fine-tunes with SAM under ASAM's adaptive constraint
``‖T_w⁻¹ ε‖₂ ≤ ρ`` with ``T_w = diag(|w|)`` (Kwon et al., ICML 2021): each weight's share of the
perturbation grows with its magnitude, so the large-norm (backdoor-related) neurons are perturbed most, and
minimising the loss at the perturbed point shrinks their norms.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data.arrays import ImageSet
from ..training import CROPS, augment_images, iterate_rows
from ..utils import cuda_devices
from .base import Defense, DefenseResult
from .config import DefenseConfig, setting


def _flag(default: bool) -> Any:
    """A true/false setting (``--defense-option NAME=true``)."""
    return setting(default, test=lambda v: isinstance(v, bool), must="true or false")


@dataclass(frozen=True)
class FTSAMConfig(DefenseConfig):
    """Options of :class:`FTSAM`. Defaults are BackdoorBench's ``config/defense/ft-sam/config.yaml`` (the
    paper's CIFAR-10 setting).

    SAM:
        rho: ρ, the radius of the weight perturbation (default 2.0, BackdoorBench's ``rho_max = rho_min``).
        adaptive: ASAM's adaptive radius, ``‖T_w⁻¹ ε‖₂ ≤ ρ`` with ``T_w = |w|`` element-wise, so
            ``ε = ρ · w² ⊙ g / ‖|w| ⊙ g‖₂`` (default True, as the paper and BackdoorBench); False: plain SAM,
            ``ε = ρ · g / ‖g‖₂`` (use a much smaller ρ, e.g. 0.05).
    Fine-tuning:
        epochs: passes over the clean set (default 100); batch_size: (default 256).
        lr: SGD learning rate (default 0.01), momentum (default 0.9), weight_decay (default 5e-4).
        lr_schedule: ``"cycle"`` (default: BackdoorBench's rate as it runs: a cosine with ``T_max = 100``
            stepped once per batch, so the rate falls from ``lr`` to 0 over ``cycle_steps`` (default 100)
            batches, climbs back over as many, and so on), ``"cosine"`` (annealed once per step from ``lr`` to
            0 over all epochs) or ``"constant"``.
        label_smoothing: the true class gets 1 − s, each other class s / (C − 1) (default 0.1, as BackdoorBench's
            ``smooth_crossentropy``).
        augment: ``"crop"`` (default: a random crop of the image zero-padded by 4 pixels, the training transform
            BackdoorBench applies on every dataset), ``"flip_crop"`` (plus a horizontal flip with probability 1/2,
            BackdoorBench's transform for CIFAR-10 only: it would mirror digits and traffic signs) or ``"none"``.
        same_dropout: the second pass of a SAM step (at w + ε) draws the same dropout masks as the first
            (default True): ε was computed for one sub-network and SAM's gradient belongs to the same one.
            BackdoorBench's networks have no dropout; ours (the small VGG) have. False: fresh masks.
    seed: batch order, augmentation and dropout (default 0); device: ``None`` uses CUDA when available.
    """

    epochs: int = setting(100, ge=1)
    batch_size: int = setting(256, ge=1)
    lr: float = setting(0.01, gt=0, hint="e.g. 0.01")
    momentum: float = setting(0.9, ge=0, lt=1, hint="e.g. 0.9")
    weight_decay: float = setting(5e-4, ge=0, hint="e.g. 5e-4")
    lr_schedule: str = setting("cycle", choices=("cycle", "cosine", "constant"))
    cycle_steps: int = setting(100, ge=1, hint="BackdoorBench's T_max = 100 batches")
    rho: float = setting(2.0, ge=0, hint="the paper uses 2 with the adaptive radius")
    adaptive: bool = _flag(True)
    label_smoothing: float = setting(0.1, ge=0, lt=1, hint="e.g. 0.1; 0 is plain cross-entropy")
    augment: str = setting("crop", choices=CROPS)
    same_dropout: bool = _flag(True)

    @classmethod
    def gtsrb(cls, **overrides: Any) -> FTSAMConfig:
        """BackdoorBench's GTSRB setting (``config/defense/ft-sam/gtsrb.yaml``): ρ 8, no label smoothing, 50
        epochs."""
        return cls(**{"rho": 8.0, "label_smoothing": 0.0, "epochs": 50, **overrides})


def learning_rate(cfg: FTSAMConfig, step: int, total: int) -> float:
    """The rate of batch ``step`` (from 0) of ``total`` under ``cfg.lr_schedule``.

    >>> c = FTSAMConfig(lr=0.01, cycle_steps=100)
    >>> [round(learning_rate(c, t, 1000), 4) for t in (0, 50, 100, 150, 200)]
    [0.01, 0.005, 0.0, 0.005, 0.01]
    """
    if cfg.lr_schedule == "cycle":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.cycle_steps))
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
    return cfg.lr


def smooth_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy against targets with 1 − s on the true class and s / (C − 1) on each other class.

    >>> round(smooth_cross_entropy(torch.zeros(1, 4), torch.tensor([2]), 0.1).item(), 6) == round(math.log(4), 6)
    True
    """
    classes = logits.shape[1]
    target = torch.full_like(logits, smoothing / (classes - 1))
    target.scatter_(1, labels[:, None], 1 - smoothing)
    return -(target * logits.log_softmax(1)).sum(1).mean()


def sam_perturbation(params: list[nn.Parameter], rho: float, adaptive: bool) -> list[torch.Tensor]:
    """The ascent step ε for each parameter from its current ``.grad`` g: ``ρ · T² g / ‖T g‖₂`` (norm over all
    parameters together) with ``T = |w|`` when ``adaptive`` else 1. Parameters without a gradient get 0."""
    scale = [p.detach().abs() if adaptive else torch.ones_like(p) for p in params]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    norm = torch.stack([((t * g) ** 2).sum() for t, g in zip(scale, grads)]).sum().sqrt()
    return [rho * t * t * g / (norm + 1e-12) for t, g in zip(scale, grads)]


def sam_step(model: nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             optimizer: torch.optim.Optimizer, rho: float, adaptive: bool,
             same_dropout: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One SAM update of ``model``: gradient at w, ascend to w + ε (:func:`sam_perturbation`), gradient there
    (BatchNorm running statistics frozen for this second pass and, with ``same_dropout``, the first pass's
    dropout masks drawn again), back to w, ``optimizer.step()`` with the gradient from w + ε. ``loss_fn(logits)``
    is the loss. Returns the loss at w (detached) and ε."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    # with same_dropout the generator is put back after the first forward, so the second draws the same masks
    # and the stream goes on as after one pass
    with torch.random.fork_rng(devices=cuda_devices(x.device), enabled=same_dropout):
        loss = loss_fn(model(x))
    loss.backward()
    eps = sam_perturbation(params, rho, adaptive)
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.add_(e)
    optimizer.zero_grad(set_to_none=True)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # F.batch_norm with momentum 0 leaves the running statistics as they are
    try:
        loss_fn(model(x)).backward()
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        with torch.no_grad():
            for p, e in zip(params, eps):
                p.sub_(e)
    optimizer.step()
    return loss.detach(), eps


class FTSAM(Defense):
    """FT-SAM from "Enhancing Fine-Tuning Based Backdoor Defense with Sharpness-Aware Minimization" (Zhu et al.,
    ICCV 2023, https://arxiv.org/abs/2304.11823). Arguments and defaults: :class:`FTSAMConfig`.

    For ``epochs`` passes over the clean set (model in train mode), per batch: :func:`sam_step` with the
    label-smoothed cross-entropy (:func:`smooth_cross_entropy`), ε from ASAM's adaptive radius
    (:func:`sam_perturbation`), and SGD (momentum, weight decay, the rate of :func:`learning_rate`) on the
    gradient taken at w + ε.
    Checkpoints ``"epoch k"``.

    Shape: ``model`` maps N×C×H×W images in [0, 1] to N×K logits; ``clean`` holds N×C×H×W float images in
    [0, 1] and N int64 labels; the result's model has the input's architecture.

    Cost: two forward+backward passes per batch; ~7 ms per image and epoch on the small VGG at 32×32 (one thread
    of a busy 2-core machine), so ~1 h for the default 100 epochs on 5,000 images (the ``cpu`` bench preset
    runs 20). On 128 clean digits, 2 epochs took ASR from 98% to 51% where the same fine-tuning with ρ = 0 left
    99% (``tests/test_defense_ft_sam.py``).

    ``DefenseResult.extra``: ``losses`` (mean training loss at w per epoch), ``perturbation_norm`` (mean ‖ε‖₂ per
    epoch).

    >>> FTSAM(epochs=2).config.rho, FTSAM(epochs=2).config.adaptive
    (2.0, True)
    """

    name = "ft_sam"
    label = "FT-SAM"
    config_class = FTSAMConfig
    presets = {"default": FTSAMConfig, "gtsrb": FTSAMConfig.gtsrb}

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c, dev = self.config, self._device
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=c.lr, momentum=c.momentum,
                              weight_decay=c.weight_decay)
        gen = torch.Generator().manual_seed(c.seed)
        per_epoch = (len(clean) + c.batch_size - 1) // c.batch_size
        total = c.epochs * per_epoch
        losses: list[float] = []
        eps_norms: list[float] = []
        done, kept = self.kept_progress("epochs")  # a run stopped between epochs continues after the last one
        if kept is not None:
            model.load_state_dict(kept["model"])
            opt.load_state_dict(kept["optimizer"])
            gen.set_state(kept["generator"])
            losses, eps_norms = list(kept["losses"]), list(kept["perturbation_norm"])
        bar = tqdm(total=total, initial=done * per_epoch, desc="ft_sam", disable=not progress, leave=False)
        step = done * per_epoch
        try:
            for epoch in range(done + 1, c.epochs + 1):
                model.train()
                loss_sum, eps_sum = 0.0, 0.0
                for rows in iterate_rows(len(clean), c.batch_size, gen):
                    for group in opt.param_groups:
                        group["lr"] = learning_rate(c, step, total)
                    x, y = clean.images[rows], clean.labels[rows]
                    x = augment_images(x, c.augment, gen, padding=4)
                    x, y = x.to(dev), y.to(dev)
                    loss_fn = functools.partial(smooth_cross_entropy, labels=y, smoothing=c.label_smoothing)
                    loss, eps = sam_step(model, loss_fn, x, opt, c.rho, c.adaptive, c.same_dropout)
                    loss_sum += float(loss) * len(y)
                    eps_sum += float(torch.stack([(e ** 2).sum() for e in eps]).sum().sqrt())
                    step += 1
                    bar.update(1)
                losses.append(loss_sum / len(clean))
                eps_norms.append(eps_sum / per_epoch)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                model.eval()
                self.checkpoint(model, f"epoch {epoch}")
                self.keep_progress("epochs", epoch, lambda: {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                             "generator": gen.get_state(), "losses": losses,
                                                             "perturbation_norm": eps_norms})
        finally:
            bar.close()
        return DefenseResult(model=model.eval(), extra={"losses": losses, "perturbation_norm": eps_norms})
