"""Shared Adversarial Unlearning: unlearn the adversarial examples the purified and the backdoored model share.

Wei, Zhang, Zha and Wu, "Shared Adversarial Unlearning: Backdoor Mitigation by Unlearning Shared Adversarial
Examples", NeurIPS 2023, https://arxiv.org/abs/2307.10562 (the first author's implementation is BackdoorBench's
``defense/sau.py``, https://github.com/SCLBD/BackdoorBench; its ``config/defense/sau/config.yaml`` holds the
defaults used here).

SAU is I-BAU's successor: instead of one universal perturbation it draws a perturbation per image, and it
unlearns only the adversarial examples that are *shared*, those on which the model being purified (θ) and the
backdoored model (θ_bd, frozen) agree on a wrong label; the paper bounds the backdoor risk of θ by its risk on
those examples.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.arrays import ImageSet
from ..training import iterate_rows
from .base import Defense, DefenseResult
from .config import DefenseConfig, setting

logger = logging.getLogger(__name__)

def _flag(default: bool) -> Any:
    """A true/false setting (``--defense-option NAME=true``)."""
    return setting(default, test=lambda v: isinstance(v, bool), must="true or false")


@dataclass(frozen=True)
class SAUConfig(DefenseConfig):
    """Options of :class:`SAU`. Defaults are BackdoorBench's ``config/defense/sau/config.yaml`` (the paper's
    CIFAR-10 setting).

    Run:
        rounds: passes over the clean set (default 100, BackdoorBench's ``n_rounds``); one PGD search and
            one unlearning step per batch.
        batch_size: (default 256).
        lr: learning rate of the unlearning step: Adam with AMSGrad, no weight decay, constant rate (default
            1e-4, BackdoorBench's).
        train_mode: run the unlearning step's forward pass in train mode (BatchNorm on batch statistics and
            its running statistics updated, dropout active) (default False: eval mode throughout, as
            BackdoorBench, whose note says fixed BatchNorm keeps ACC higher but also ASR higher).
    Shared PGD (the maximisation, one perturbation per image; :func:`shared_pgd`):
        norm: ``"linf"`` (default) or ``"l2"`` ball of the perturbation; bound: its radius in pixel units
            (default 0.2, BackdoorBench's ``trigger_norm``). x + δ is not clipped to [0, 1] (as BackdoorBench).
        pgd_steps: ascent steps (default 5); pgd_lr: step size (default 0.2; ℓ∞: a signed-gradient step,
            ℓ2: a step along the per-image normalised gradient).
        pgd_init: start of δ: ``"max"`` (default: +bound in every pixel, then projected), ``"min"``,
            ``"zero"`` or ``"random"`` (uniform in [−bound, bound], then projected).
        beta1: weight of the adversarial term (raise the loss of both models on the images not yet fooled)
            (default 0.01); beta2: weight of the sharing term (Jensen–Shannon divergence of the two models'
            outputs on the images whose adversarial example is not yet shared) (default 1.0).
    Unlearning loss (the minimisation): ``lmd1 · L_clean + lmd2 · L_adv + lmd3 · L_shared``:
        lmd1: clean cross-entropy (default 1.0); lmd2: cross-entropy on the adversarial examples (vanilla
            adversarial training; default 0.0, off, as BackdoorBench); lmd3: shared adversarial risk,
            −log(1 − p_θ(ŷ_bd | x + δ)) on the examples that fool θ_bd (default 1.0).
    seed: batch order and random starts (default 0); device: ``None`` uses CUDA when available.
    """

    rounds: int = setting(100, ge=1, hint="BackdoorBench runs 100; SAUConfig.cpu() runs 5")
    batch_size: int = setting(256, ge=1)
    lr: float = setting(1e-4, gt=0, hint="e.g. 1e-4")
    train_mode: bool = _flag(False)
    norm: str = setting("linf", choices=("linf", "l2"))
    bound: float = setting(0.2, gt=0, hint="pixel units; BackdoorBench uses 0.2 (ℓ∞)")
    pgd_steps: int = setting(5, ge=1)
    pgd_lr: float = setting(0.2, gt=0, hint="e.g. 0.2")
    pgd_init: str = setting("max", choices=("max", "min", "zero", "random"))
    beta1: float = setting(0.01, ge=0, hint="e.g. 0.01")
    beta2: float = setting(1.0, ge=0, hint="e.g. 1.0")
    lmd1: float = setting(1.0, ge=0, hint="the paper uses 1")
    lmd2: float = setting(0.0, ge=0, hint="0 turns vanilla adversarial training off")
    lmd3: float = setting(1.0, ge=0, hint="the paper uses 1")

    @classmethod
    def cpu(cls, **overrides: Any) -> SAUConfig:
        """The CPU scale: 5 rounds instead of 100, everything else the default (``--preset cpu``).

        Cost: a batch takes ~15 forward+backward passes where fine-tuning takes one (5 PGD steps through both
        models, then the unlearning step on the clean and the perturbed images). Measured on the small VGG at
        32×32 (the digits, one thread of a busy 2-core machine): 30-50 ms per image per round, ~10× plain
        fine-tuning; so on 5,000 CIFAR-10 clean images ~2.5-4 min a round: ~12-20 min for these 5 rounds, 4-7 h
        for the default 100.
        """
        return cls(**{"rounds": 5, **overrides})


def shared_mask(pred: torch.Tensor, pred_ref: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Shared adversarial examples (the paper's definition): both models wrong, and on the same label.

    >>> shared_mask(torch.tensor([1, 2, 0, 3]), torch.tensor([1, 1, 0, 3]), torch.tensor([0, 0, 0, 3]))
    tensor([ True, False, False, False])
    """
    return (pred != labels) & (pred_ref != labels) & (pred == pred_ref)


def _project(delta: torch.Tensor, norm: str, bound: float) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-bound, bound)
    norms = delta.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (delta.dim() - 1))
    return delta * torch.clamp(bound / norms, max=1.0)


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen–Shannon divergence of two probability matrices (clamped away from 0)."""
    p, q = p.clamp(min=1e-8), q.clamp(min=1e-8)
    m = (p + q) / 2
    return 0.5 * ((p * (p.log() - m.log())).sum(1) + (q * (q.log() - m.log())).sum(1))


def shared_pgd(model: nn.Module, ref: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: SAUConfig,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """One perturbation per image (N×C×H×W, inside ``cfg.norm``'s ball of radius ``cfg.bound``) that the two
    models ``model`` (θ) and ``ref`` (θ_bd) share: BackdoorBench's Shared PGD.

    Each of ``cfg.pgd_steps`` steps descends ``beta1 · L_adv + beta2 · L_share`` in δ, where an attack
    succeeds on a model when its prediction on x + δ differs from its prediction on x, L_adv is minus the
    mean cross-entropy (true labels) of each model on the images it is not yet fooled on, and L_share the
    Jensen–Shannon divergence of the two models' outputs on the images whose example is not yet shared
    (both fooled, same label); it stops early once every example is shared. Both models should be in eval
    mode; their weights receive no gradient.
    """
    with torch.no_grad():
        clean_pred, clean_pred_ref = model(x).argmax(1), ref(x).argmax(1)
    if cfg.pgd_init == "max":
        delta = torch.full_like(x, cfg.bound)
    elif cfg.pgd_init == "min":
        delta = torch.full_like(x, -cfg.bound)
    elif cfg.pgd_init == "zero":
        delta = torch.zeros_like(x)
    else:
        delta = ((torch.rand(x.shape, generator=generator) * 2 - 1) * cfg.bound).to(x.device)
    delta = _project(delta, cfg.norm, cfg.bound)
    n = len(x)
    for _ in range(cfg.pgd_steps):
        delta.requires_grad_(True)
        out, out_ref = model(x + delta), ref(x + delta)
        pred, pred_ref = out.argmax(1), out_ref.argmax(1)
        fooled, fooled_ref = pred != clean_pred, pred_ref != clean_pred_ref
        shared = fooled & fooled_ref & (pred == pred_ref)
        loss_adv = -(F.cross_entropy(out, y, reduction="none")[~fooled].sum()
                     + F.cross_entropy(out_ref, y, reduction="none")[~fooled_ref].sum()) / (2 * n)
        loss_share = _js(out.softmax(1), out_ref.softmax(1))[~shared].sum() / n
        (grad,) = torch.autograd.grad(cfg.beta1 * loss_adv + cfg.beta2 * loss_share, delta)
        with torch.no_grad():
            if cfg.norm == "linf":
                step = grad.sign()
            else:
                step = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (x.dim() - 1))
            delta = _project(delta - cfg.pgd_lr * step, cfg.norm, cfg.bound)
        if bool(shared.all()):
            break
    return delta.detach()


def shared_loss(logits_adv: torch.Tensor, pred_ref_adv: torch.Tensor, fooled_ref: torch.Tensor) -> torch.Tensor:
    """L_shared: Σ over the images that fool θ_bd of −log(1 − p_θ(ŷ_bd | x + δ)), divided by the batch size.
    p is clamped to >= 0.001 (a sample the model already gives < 0.1% is left alone, as BackdoorBench)."""
    if not bool(fooled_ref.any()):
        return logits_adv.sum() * 0
    p = logits_adv.softmax(1).gather(1, pred_ref_adv[:, None])[:, 0]
    return -torch.log(1 + 1e-6 - p.clamp(min=1e-3))[fooled_ref].sum() / len(logits_adv)


def count_shared(model: nn.Module, ref: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: SAUConfig,
                 batch_size: int = 256, seed: int = 0) -> int:
    """How many of ``images`` have a shared adversarial example found by :func:`shared_pgd` (both models in
    eval mode; the images are processed in order)."""
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    total = 0
    was = model.training, ref.training
    model.eval()
    ref.eval()
    try:
        for start in range(0, len(images), batch_size):
            x, y = images[start:start + batch_size].to(dev), labels[start:start + batch_size].to(dev)
            delta = shared_pgd(model, ref, x, y, cfg, gen)
            with torch.no_grad():
                total += int(shared_mask(model(x + delta).argmax(1), ref(x + delta).argmax(1), y).sum())
    finally:
        model.train(was[0])
        ref.train(was[1])
    return total


def _top_label(counts: dict[int, int]) -> dict[str, Any]:
    """The label θ_bd gives most often to the examples that fool it, and its share of them: near 1 when the
    perturbations find one class (a backdoor's target, say), near 1/K when they scatter.

    >>> _top_label({3: 6, 1: 2})
    {'top_label': 3, 'top_label_share': 0.75}
    """
    if not counts:
        return {"top_label": None, "top_label_share": None}
    top = max(sorted(counts), key=counts.__getitem__)
    return {"top_label": top, "top_label_share": counts[top] / sum(counts.values())}


class SAU(Defense):
    """SAU from "Shared Adversarial Unlearning: Backdoor Mitigation by Unlearning Shared Adversarial Examples"
    (Wei et al., NeurIPS 2023, https://arxiv.org/abs/2307.10562). Arguments and defaults: :class:`SAUConfig`.

    θ_bd is a frozen copy of the input model; θ (the model returned) starts from it. For ``rounds`` passes
    over the clean set, per batch (x, y):

    1. δ ← :func:`shared_pgd` (θ, θ_bd, x, y): per-image perturbations in the ℓ∞ ball of radius ``bound``.
    2. One Adam step on θ of ``lmd1 · CE(θ(x), y) + lmd2 · CE(θ(x + δ), y) + lmd3 · L_shared`` where
       L_shared (:func:`shared_loss`) pushes down θ's probability of θ_bd's label on x + δ wherever x + δ
       fools θ_bd (its label is neither y nor its prediction on x). Those are the examples that can be
       shared; lowering p_θ there un-shares them.

    Checkpoints ``"round k"``. ``DefenseResult.extra["per_round"]`` (not ``"rounds"``, I-BAU's key, which grid
    records leave out): per round the mean losses (``clean``, ``adv``, ``shared_loss``), ``fooled_ref``
    (fraction of images whose x + δ fools θ_bd) and ``shared`` (fraction on which θ and θ_bd agree on a wrong
    label, :func:`shared_mask`), both measured at the unlearning step, before it, and ``top_label`` /
    ``top_label_share`` (the label θ_bd gives most often to the examples that fool it, and its share of them:
    whether the perturbations find one class, as the paper's argument needs on a one-target backdoor, or
    scatter).

    Shape: ``model`` maps N×C×H×W images in [0, 1] to N×K logits; ``clean`` holds N×C×H×W float images in
    [0, 1] and N int64 labels; the result's model has the input's architecture.

    Cost: about 15 forward+backward passes per batch where fine-tuning costs one; ``SAUConfig.cpu()`` (the
    ``cpu`` preset) runs 5 rounds (see its docstring for the measured cost).

    >>> SAU(rounds=2).config.bound, SAU.preset_names()
    (0.2, ['default', 'cpu'])
    """

    name = "sau"
    label = "SAU"
    config_class = SAUConfig
    presets = {"default": SAUConfig, "cpu": SAUConfig.cpu}

    def _run(self, model: nn.Module, clean: ImageSet, progress: bool) -> DefenseResult:
        c, dev = self.config, self._device
        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        model.eval()
        opt = torch.optim.Adam(model.parameters(), lr=c.lr, amsgrad=True)
        gen = torch.Generator().manual_seed(c.seed)
        records: list[dict[str, float]] = []
        done, kept = self.kept_progress("rounds")  # a run stopped between rounds continues after the last one
        if kept is not None:
            model.load_state_dict(kept["model"])
            opt.load_state_dict(kept["optimizer"])
            gen.set_state(kept["generator"])
            records = list(kept["records"])
        per_round = (len(clean) + c.batch_size - 1) // c.batch_size
        bar = tqdm(total=c.rounds * per_round, initial=done * per_round, desc="sau", disable=not progress, leave=False)
        try:
            for rnd in range(done + 1, c.rounds + 1):
                sums = dict.fromkeys(("clean", "adv", "shared_loss", "fooled_ref", "shared"), 0.0)
                labels: dict[int, int] = {}  # θ_bd's labels on the examples that fool it
                for rows in iterate_rows(len(clean), c.batch_size, gen):
                    x, y = clean.images[rows].to(dev), clean.labels[rows].to(dev)
                    model.eval()
                    delta = shared_pgd(model, ref, x, y, c, gen)
                    stats, fooled_labels = self._unlearn(model, ref, opt, x, y, delta)
                    for k, v in stats.items():
                        sums[k] += v * len(y)
                    for k, v in zip(*torch.unique(fooled_labels, return_counts=True)):
                        labels[int(k)] = labels.get(int(k), 0) + int(v)
                    bar.update(1)
                record = {"round": rnd, **{k: v / len(clean) for k, v in sums.items()}, **_top_label(labels)}
                records.append(record)
                bar.set_postfix(clean=f"{record['clean']:.3f}", shared=f"{record['shared']:.2f}")
                model.eval()
                self.checkpoint(model, f"round {rnd}")
                self.keep_progress("rounds", rnd, lambda: {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                           "generator": gen.get_state(), "records": records})
        finally:
            bar.close()
        logger.info(f"sau: {c.rounds} rounds; shared adversarial examples {records[0]['shared']:.2f} -> {records[-1]['shared']:.2f}")
        return DefenseResult(model=model.eval(), extra={"per_round": records})

    def _unlearn(self, model: nn.Module, ref: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                 y: torch.Tensor, delta: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        """One unlearning step; returns the batch's mean losses and shared/fooled fractions (before the step),
        and θ_bd's labels on the examples that fool it."""
        c = self.config
        x_adv = x + delta
        model.train(c.train_mode)
        logits, logits_adv = model(torch.cat([x, x_adv])).split(len(x))
        model.eval()
        with torch.no_grad():
            pred_ref, pred_ref_adv = ref(x).argmax(1), ref(x_adv).argmax(1)
        fooled_ref = (pred_ref_adv != y) & (pred_ref_adv != pred_ref)
        loss_clean = F.cross_entropy(logits, y)
        loss_adv = F.cross_entropy(logits_adv, y)
        loss_shared = shared_loss(logits_adv, pred_ref_adv, fooled_ref)
        loss = c.lmd1 * loss_clean + c.lmd2 * loss_adv + c.lmd3 * loss_shared
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        shared = shared_mask(logits_adv.detach().argmax(1), pred_ref_adv, y)
        return {"clean": float(loss_clean.detach()), "adv": float(loss_adv.detach()),
                "shared_loss": float(loss_shared.detach()), "fooled_ref": float(fooled_ref.float().mean()),
                "shared": float(shared.float().mean())}, pred_ref_adv[fooled_ref].cpu()
