"""The inner maximisation: find one universal δ that maximises the loss on the clean set."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..training import cycle_batches
from .config import IBAUConfig


def project(delta: torch.Tensor, norm: str, bound: float | None) -> torch.Tensor:
    """Project δ onto the ℓ2 ball or ℓ∞ box of radius ``bound`` (in place; returns δ); norm "none": δ."""
    if bound is None:
        return delta
    with torch.no_grad():
        if norm == "l2":
            size = delta.norm()
            if size > bound:
                delta.mul_(bound / size)
        elif norm == "linf":
            delta.clamp_(-bound, bound)
    return delta


def perturb(x: torch.Tensor, delta: torch.Tensor, clamp: bool) -> torch.Tensor:
    """x + δ, optionally clamped to the valid pixel range."""
    out = x + delta
    return out.clamp(0, 1) if clamp else out


def objective(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, delta: torch.Tensor,
              cfg: IBAUConfig) -> torch.Tensor:
    """H(δ, θ) = CE(f(x+δ), labels) − λ‖δ‖², the quantity δ maximises."""
    loss = F.cross_entropy(model(perturb(x, delta, cfg.clamp)), labels)
    if cfg.inner_penalty:
        loss = loss - cfg.inner_penalty * delta.pow(2).sum()
    return loss


def solve_delta(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                shape: tuple[int, ...], cfg: IBAUConfig, steps: int,
                on_step: Callable[[torch.Tensor], None] | None = None,
                start: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Run ``steps`` ascent steps from ``start`` (default δ = 0); returns ``(δ, mean H over the steps)``.

    Only δ is differentiated (``autograd.grad``), so no weight gradients are computed or accumulated.
    """
    param = next(model.parameters())
    if start is None:
        delta = torch.zeros(shape, device=param.device, dtype=param.dtype)
    else:
        delta = project(start.detach().clone().to(param.device, param.dtype), cfg.norm, cfg.norm_bound)
    delta.requires_grad_(True)
    opt_cls = torch.optim.SGD if cfg.inner_optimizer == "sgd" else torch.optim.Adam
    opt = opt_cls([delta], lr=cfg.inner_lr)
    total, done = 0.0, 0
    for x, y in cycle_batches(batches, steps):  # more steps than batches: another pass
        if cfg.pseudo_labels:
            with torch.no_grad():  # not inference_mode: the labels feed a differentiated loss
                y = model(x).argmax(1)
        h = objective(model, x, y, delta, cfg)
        (grad,) = torch.autograd.grad(-h, delta)
        delta.grad = grad
        opt.step()
        project(delta, cfg.norm, cfg.norm_bound)
        total += float(h.detach())
        done += 1
        if on_step is not None:
            on_step(delta.detach())
    return delta.detach(), total / max(done, 1)


#: pixel counts tried for δ's patch, smallest first (64 pixels: 6% of a 32×32 image)
PATCH_SIZES = (4, 9, 16, 25, 36, 49, 64)


def delta_patch(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, threshold: float,
                sizes: tuple[int, ...] = PATCH_SIZES, before: torch.Tensor | None = None,
                chunk: int = 50) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """The smallest stamp (at most 1/16 of the pixels) made of δ's strongest pixels that sends at least ``threshold`` of the clean images
    ``x`` to one class, or None. The mask is the k pixels where ‖δ‖² over channels is largest; the pattern is
    each channel's extreme, 1 where δ > 0 and 0 elsewhere, so the stamp is a valid image, as a trigger is.

    A backdoor's trigger is a small input the model maps to one class; an unbounded δ puts much of its energy
    there (41–50% on the authors' model) but at values far outside [0, 1]. Stamping its strongest pixels
    reads the trigger back at a trigger's scale. Returns ``(mask 1×H×W, pattern C×H×W, fooling rate)``, the
    rate being, for the class the stamp sends most images to, the share of the images not already predicted
    as that class that it sends there (an ASR measured on clean images).

    ``before``: the model's predictions on ``x`` when the caller has them (the class search scores ten δ on
    one model). The images are scored ``chunk`` at a time and a size is dropped as soon as no class can reach
    the threshold any more, which gives the same answer as scoring them all (the model is in eval mode).
    """
    energy = delta.detach().pow(2).sum(0).flatten()
    order = energy.argsort(descending=True)
    pattern = (delta.detach() > 0).to(x.dtype)
    with torch.no_grad():
        before = model(x).argmax(1) if before is None else before
        for k in sizes:
            if k > energy.numel() // 16:  # a stamp covers at most 1/16 of the image (64 pixels of 32×32)
                break
            mask = torch.zeros_like(energy)
            mask[order[:k]] = 1
            mask = mask.view(1, *delta.shape[1:]).to(x.dtype)
            rate = _stamp_rate(model, x, before, mask, pattern, threshold, chunk)
            if rate is not None and rate >= threshold:
                return mask, pattern, rate
    return None


def _stamp_rate(model: nn.Module, x: torch.Tensor, before: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor,
                threshold: float, chunk: int) -> float | None:
    """:func:`_sent_to_one_class` of the stamped images, or None once no class can reach ``threshold``: a class
    c's final rate is at most 1 − (images of other classes not sent to c so far) / (images of other classes)."""
    preds: list[torch.Tensor] = []
    for i in range(0, len(x), chunk):
        logits = model((1 - mask) * x[i:i + chunk] + mask * pattern)
        preds.append(logits.argmax(1))
        if i + chunk >= len(x):
            break
        classes = torch.arange(logits.shape[1], device=before.device)[:, None]
        pred, seen = torch.cat(preds), before[:i + len(logits)]
        others = (before[None] != classes).sum(1)
        missed = ((seen[None] != classes) & (pred[None] != classes)).sum(1)
        best = 1 - missed.double() / others.clamp(min=1).double()
        if not bool(((others > 0) & (best + 1e-6 >= threshold)).any()):
            return None
    return _sent_to_one_class(before, torch.cat(preds))


def targeted_delta(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                   like: torch.Tensor, target: int, cfg: IBAUConfig, steps: int) -> torch.Tensor:
    """A sparse universal δ that sends clean images to ``target``: ``steps`` descent steps (the inner
    optimiser and step size) on CE(f(x+δ), target) + inner_penalty·‖δ‖² + patch_l1·‖δ‖₁ from δ = 0.

    The ℓ1 term is what makes it a trigger search: without it every class is reached by a diffuse δ of
    similar size; with it the backdoor's target is reached by a δ several times smaller than the others',
    with its energy on the trigger (digits GroupNorm, the authors' CIFAR-10 model; docs/presets.md).
    ``like`` is one image (C×H×W): δ takes its shape, dtype and device.
    """
    delta = torch.zeros_like(like, requires_grad=True)
    opt_cls = torch.optim.SGD if cfg.inner_optimizer == "sgd" else torch.optim.Adam
    opt = opt_cls([delta], lr=cfg.inner_lr)
    for x, _ in cycle_batches(batches, steps):
        wanted = torch.full((len(x),), target, device=x.device, dtype=torch.int64)
        loss = F.cross_entropy(model(perturb(x, delta, cfg.clamp)), wanted)
        loss = loss + cfg.inner_penalty * delta.pow(2).sum() + cfg.patch_l1 * delta.abs().sum()
        (grad,) = torch.autograd.grad(loss, delta)
        delta.grad = grad
        opt.step()
    return delta.detach()


def class_patch(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                x: torch.Tensor, cfg: IBAUConfig, steps: int,
                num_classes: int) -> tuple[torch.Tensor, torch.Tensor, float, int] | None:
    """Search one sparse δ per class (:func:`targeted_delta`) and read a stamp from each
    (:func:`delta_patch` on the clean images ``x``); the smallest stamp found (then the highest rate) wins.
    Returns ``(mask, pattern, fooling rate, class)`` or None. Uses clean data only: a defender's search."""
    best = None
    with torch.no_grad():
        before = model(x).argmax(1)
    for target in range(num_classes):
        delta = targeted_delta(model, batches, x[0], target, cfg, steps)
        found = delta_patch(model, x, delta, cfg.patch_threshold, before=before)
        if found is not None and (best is None or (found[0].sum(), -found[2]) < (best[0].sum(), -best[2])):
            best = (*found, target)
    return best


def _sent_to_one_class(before: torch.Tensor, after: torch.Tensor) -> float:
    best = 0.0
    for c in after.unique():
        others = before != c
        if others.any():
            best = max(best, float((after[others] == c).float().mean()))
    return best
