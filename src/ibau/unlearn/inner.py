"""The inner maximisation: find one universal δ that maximises the loss on the clean set."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from ..training import cycle_batches
from .config import IBAUConfig
from .distributed import SINGLE, Ranks

logger = logging.getLogger(__name__)


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
              cfg: IBAUConfig, *, ranks: Ranks = SINGLE, total: int | None = None) -> torch.Tensor:
    """H(δ, θ) = CE(f(x+δ), labels) − λ‖δ‖², the quantity δ maximises.

    Across ``ranks`` (:mod:`ibau.unlearn.distributed`), ``x`` is this rank's share of a global batch of
    ``total`` images and the result is this rank's part of H: the parts sum to H, the penalty on δ alone
    being counted once (on rank 0).
    """
    loss = ranks.cross_entropy(ranks.forward(model, perturb(x, delta, cfg.clamp)), labels, total or len(x))
    if cfg.inner_penalty and ranks.is_main:
        loss = loss - cfg.inner_penalty * delta.pow(2).sum()
    return loss


def solve_delta(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                shape: tuple[int, ...], cfg: IBAUConfig, steps: int,
                on_step: Callable[[torch.Tensor], None] | None = None,
                start: torch.Tensor | None = None, *, ranks: Ranks = SINGLE) -> tuple[torch.Tensor, float]:
    """Run ``steps`` ascent steps from ``start`` (default δ = 0); returns ``(δ, mean H over the steps)``.

    Only δ is differentiated (``autograd.grad``), so no weight gradients are computed or accumulated.
    Across ``ranks`` each rank scores its share of every global batch and δ's gradient is summed over the
    ranks before the step and the projection, so every rank holds the same δ.
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
    for x_all, y_all in cycle_batches(batches, steps):  # more steps than batches: another pass
        x, y = ranks.shard(x_all), ranks.shard(y_all)
        if cfg.pseudo_labels:
            with torch.no_grad():  # not inference_mode: the labels feed a differentiated loss
                y = ranks.forward(model, x).argmax(1)
        h = objective(model, x, y, delta, cfg, ranks=ranks, total=len(x_all))
        (grad,) = torch.autograd.grad(-h, delta)
        grad, h = ranks.all_reduce_sum(grad, h.detach())
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
#: pixel counts tried for the stamp of the class that stands out by ‖δ‖₁ (``patch_pick="l1"``), up to 1/4 of the
#: image: a watermark spread over the image has no stamp of 64 pixels (GTSRB Trojan WM: 93% at 64, 100% at 100)
OUTLIER_SIZES = PATCH_SIZES + (81, 100, 121, 144, 169, 196, 225, 256)
#: Neural Cleanse's anomaly index: (median − value) / (1.4826 · median absolute deviation) at or above this
ANOMALY_INDEX = 2.0


def l1_anomaly(deltas: dict[int, torch.Tensor]) -> tuple[int, float] | None:
    """The class whose sparse targeted δ (``deltas[class]``) has the smallest ‖δ‖₁ and how far that norm lies
    below the others by Neural Cleanse's anomaly index (Wang et al. 2019: the distance below the median in units
    of 1.4826 · MAD); None with fewer than 3 classes or no spread."""
    if len(deltas) < 3:
        return None
    classes = sorted(deltas)
    norms = torch.stack([deltas[c].detach().abs().sum() for c in classes]).double()
    median = torch.quantile(norms, 0.5)
    mad = 1.4826 * torch.quantile((norms - median).abs(), 0.5)
    if not mad > 0:
        return None
    lowest = int(norms.argmin())
    index = float((median - norms[lowest]) / mad)
    logger.debug("class search by ‖δ‖₁: class %d, %.1f against a median of %.1f (anomaly index %.2f)",
                 classes[lowest], float(norms[lowest]), float(median), index)
    return classes[lowest], index


def l1_outlier(deltas: dict[int, torch.Tensor], threshold: float = ANOMALY_INDEX) -> int | None:
    """The class whose sparse targeted δ has the smallest ‖δ‖₁, when that norm stands out below the others by
    an anomaly index of at least ``threshold`` (:func:`l1_anomaly`); None otherwise. The backdoor's target is
    reached with less: GTSRB Trojan WM, class 2's ‖δ‖₁ 493 against a median of 830 (index 2.19), where δ's own
    stamp and the smallest-stamp rule pick classes 8, 14 and 38."""
    return _standing_out(l1_anomaly(deltas), threshold)


def _standing_out(anomaly: tuple[int, float] | None, threshold: float = ANOMALY_INDEX) -> int | None:
    """The class of :func:`l1_anomaly`'s answer when its index reaches ``threshold``, else None."""
    return anomaly[0] if anomaly is not None and anomaly[1] >= threshold else None


def delta_patch(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, threshold: float,
                sizes: tuple[int, ...] = PATCH_SIZES, before: torch.Tensor | None = None,
                chunk: int = 50, *, ranks: Ranks = SINGLE,
                share: int = 16) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """The smallest stamp (at most 1/``share`` of the pixels, default 1/16) made of δ's strongest pixels that
    sends at least ``threshold`` of the clean images ``x`` to one class, or None. The mask is the k pixels where
    ‖δ‖² over channels is largest; the pattern is each channel's extreme, 1 where δ > 0 and 0 elsewhere, so the
    stamp is a valid image, as a trigger is.

    A backdoor's trigger is a small input the model maps to one class; an unbounded δ puts much of its energy
    there (41–50% on the authors' model) but at values far outside [0, 1]. Stamping its strongest pixels
    reads the trigger back at a trigger's scale. Returns ``(mask 1×H×W, pattern C×H×W, fooling rate)``, the
    rate being, for the class the stamp sends most images to, the share of the images not already predicted
    as that class that it sends there (an ASR measured on clean images).

    ``before``: the model's predictions on ``x`` when the caller has them (the class search scores ten δ on
    one model). The images are scored ``chunk`` at a time and a size is dropped as soon as no class can reach
    the threshold any more, which gives the same answer as scoring them all (the model is in eval mode).
    Across ``ranks`` each rank scores its share of ``x`` (``before`` is then its share's predictions) and
    the counts are summed over the ranks, so all take the same decisions.
    """
    order, pattern = _stamp_parts(delta, x.dtype)
    with torch.no_grad():
        before = ranks.forward(model, ranks.shard(x)).argmax(1) if before is None else before
        for k in sizes:
            if k > order.numel() // share:  # by default at most 1/16 of the image (64 pixels of 32×32)
                break
            mask = _stamp_mask(delta, order, k, x.dtype)
            rate = _stamp_rate(model, x, before, mask, pattern, threshold, chunk, ranks)
            if rate is not None and rate >= threshold:
                return mask, pattern, rate
    return None


def stamp_rate(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor, chunk: int = 50, *,
               ranks: Ranks = SINGLE) -> float:
    """How well a stamp (mask, pattern) still works on ``model``: for the class it sends most other-class images of
    ``x`` to, the share of them it sends there (:func:`delta_patch`'s rate, every image scored). Clean data only."""
    with torch.no_grad():
        before = ranks.forward(model, ranks.shard(x)).argmax(1)
        return float(_stamp_rate(model, x, before, mask, pattern, 0.0, chunk, ranks) or 0.0)


def _stamp_parts(delta: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """δ's pixels, strongest first (‖δ‖² over channels), and the stamp's pattern: each channel's extreme,
    1 where δ > 0 and 0 elsewhere, so that a stamp is a valid image, as a trigger is."""
    order = delta.detach().pow(2).sum(0).flatten().argsort(descending=True)
    return order, (delta.detach() > 0).to(dtype)


def _stamp_mask(delta: torch.Tensor, order: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """The mask (1×H×W) of δ's ``k`` strongest pixels, ``order`` being :func:`_stamp_parts`' first part."""
    mask = torch.zeros(order.numel(), dtype=dtype, device=delta.device)
    mask[order[:k]] = 1
    return mask.view(1, *delta.shape[1:])


def _stamp_rate(model: nn.Module, x: torch.Tensor, before: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor,
                threshold: float, chunk: int, ranks: Ranks = SINGLE) -> float | None:
    """The stamp's rate (for the class it sends most other-class images to, the share of those it sends
    there), or None once no class can reach ``threshold``: a class
    c's final rate is at most 1 − (images of other classes not sent to c so far) / (images of other classes).

    Counted per class (others: images of other classes; missed: those of them not sent to c), so that the
    counts of ``ranks`` add up; the ranks score their shares of ``chunk`` images at a time (rounded up to a
    multiple of the ranks, so that a chunk's shares are rows of the shares ``before`` was computed on), so
    they score together the images one process scores and stop at the same chunk.
    """
    if not len(x):
        return 0.0
    chunk = -(-chunk // ranks.world) * ranks.world
    logits = _stamped_logits(model, x[:chunk], mask, pattern, ranks)
    classes = torch.arange(logits.shape[1], device=before.device)[:, None]
    (others,) = ranks.all_reduce_sum((before[None] != classes).sum(1))
    missed_here, done = torch.zeros_like(others), 0
    for i in range(0, len(x), chunk):
        if i:
            logits = _stamped_logits(model, x[i:i + chunk], mask, pattern, ranks)
        seen, done = before[done:done + len(logits)], done + len(logits)
        missed_here += ((seen[None] != classes) & (logits.argmax(1)[None] != classes)).sum(1)
        (missed,) = ranks.all_reduce_sum(missed_here)
        if i + chunk >= len(x):
            break
        best = 1 - missed.double() / others.clamp(min=1).double()
        if not bool(((others > 0) & (best + 1e-6 >= threshold)).any()):
            return None
    # the share of the other classes' images sent to c, as a float32 mean, like a per-class accuracy
    rates = (others - missed).float() / others.clamp(min=1).float()
    return max([0.0] + [float(r) for r, o in zip(rates, others) if o > 0])


def _stamped_logits(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor,
                    ranks: Ranks) -> torch.Tensor:
    """The model's logits on this rank's share of ``x`` with the stamp (mask, pattern) on."""
    return ranks.forward(model, (1 - mask) * ranks.shard(x) + mask * pattern)


def targeted_delta(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                   like: torch.Tensor, target: int, cfg: IBAUConfig, steps: int, *, bound: float | None = None,
                   start: torch.Tensor | None = None, ranks: Ranks = SINGLE,
                   on_step: Callable[[torch.Tensor, float], None] | None = None,
                   constrain: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """A sparse universal δ that sends clean images to ``target``: ``steps`` descent steps (the inner
    optimiser and step size) on CE(f(x+δ), target) + inner_penalty·‖δ‖² + patch_l1·‖δ‖₁ from δ = 0.

    The ℓ1 term is what makes it a trigger search: without it every class is reached by a diffuse δ of
    similar size; with it the backdoor's target is reached by a δ several times smaller than the others',
    with its energy on the trigger (digits GroupNorm, the authors' CIFAR-10 model; docs/presets.md).
    ``like`` is one image (C×H×W): δ takes its shape, dtype and device. ``bound``: keep δ in the ℓ2 ball of
    this radius after every step (the round probe, :mod:`ibau.unlearn.probe`; default None: no bound).
    ``start``: continue from this δ instead of 0 (the plain SGD step keeps no state, so ``a`` steps then
    ``b`` steps from where they ended are ``a + b`` steps). ``on_step(δ, cross-entropy)`` is called after
    every step. ``constrain``: a map applied to δ after every step, before the bound (the smooth search's
    low-pass, :mod:`ibau.unlearn.smooth`). Across ``ranks`` each rank scores its share of every batch, the
    penalties count once and δ's gradient is summed over the ranks.
    """
    delta = (torch.zeros_like(like) if start is None else start.detach().clone()).requires_grad_(True)
    opt_cls = torch.optim.SGD if cfg.inner_optimizer == "sgd" else torch.optim.Adam
    opt = opt_cls([delta], lr=cfg.inner_lr)
    for x_all, _ in cycle_batches(batches, steps):
        x = ranks.shard(x_all)
        wanted = torch.full((len(x),), target, device=x.device, dtype=torch.int64)
        loss = ranks.cross_entropy(ranks.forward(model, perturb(x, delta, cfg.clamp)), wanted, len(x_all))
        ce = loss.detach()
        if ranks.is_main:  # terms of δ alone: once, not once per rank
            loss = loss + cfg.inner_penalty * delta.pow(2).sum() + cfg.patch_l1 * delta.abs().sum()
        (grad,) = ranks.all_reduce_sum(*torch.autograd.grad(loss, delta))
        delta.grad = grad
        opt.step()
        if constrain is not None:
            with torch.no_grad():
                delta.copy_(constrain(delta))
        project(delta, "l2", bound)
        if on_step is not None:
            on_step(delta.detach(), float(ranks.all_reduce_sum(ce)[0]))
    return delta.detach()


class OutlierStamp(NamedTuple):
    """The class search's stamp taken by ``patch_pick="l1"`` (:func:`class_patch`): it wins over δ's own."""
    mask: torch.Tensor
    pattern: torch.Tensor
    rate: float
    target: int


def class_patch(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                x: torch.Tensor, cfg: IBAUConfig, steps: int, num_classes: int, *, ranks: Ranks = SINGLE,
                before: torch.Tensor | None = None,
                notes: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, float, int] | None:
    """Search one sparse δ per class (:func:`targeted_delta`) and read a stamp from each (:func:`delta_patch` on the
    clean images ``x``); the smallest stamp found (then the highest rate) wins. Returns ``(mask, pattern, fooling
    rate, class)`` or None. With ``cfg.patch_pick="l1"`` the class whose ‖δ‖₁ stands out (:func:`l1_outlier`) is
    taken first, its smallest stamp of up to 1/4 of the image (:data:`OUTLIER_SIZES`) that reaches the threshold;
    the result is then an :class:`OutlierStamp`, and ``notes`` (a dict, when given) gets the ℓ1-smallest class and
    its anomaly index (``suspect``, ``anomaly``). Uses clean data only: a defender's search. With
    ``cfg.patch_screen`` only the classes kept by :func:`screen_classes` are searched to ``steps``. Across ``ranks``
    each rank scores its share of ``x`` and of every batch; ``before``: the model's predictions on that share when
    the caller has them."""
    best = None
    if before is None:
        with torch.no_grad():
            before = ranks.forward(model, ranks.shard(x)).argmax(1)
    started: dict[int, torch.Tensor] = {}
    if 0 < cfg.patch_screen < steps and cfg.patch_candidates < num_classes:
        started = screen_classes(model, batches, x, before, cfg, num_classes, ranks=ranks)
    searched: dict[int, torch.Tensor] = {}
    for target in sorted(started) if started else range(num_classes):
        start = started.get(target)
        delta = searched[target] = targeted_delta(model, batches, x[0], target, cfg,
                                                  steps - (cfg.patch_screen if started else 0), start=start, ranks=ranks)
        found = delta_patch(model, x, delta, cfg.patch_threshold, before=before, ranks=ranks)
        if found is not None and (best is None or (found[0].sum(), -found[2]) < (best[0].sum(), -best[2])):
            best = (*found, target)
    anomaly = l1_anomaly(searched) if cfg.patch_pick == "l1" else None
    if notes is not None and anomaly is not None:
        notes.update(suspect=anomaly[0], anomaly=round(anomaly[1], 4))
    if (outlier := _standing_out(anomaly)) is not None:
        stamp = delta_patch(model, x, searched[outlier], cfg.patch_threshold, OUTLIER_SIZES, before=before,
                            ranks=ranks, share=4)
        logger.debug("class search by ‖δ‖₁: class %d's stamp %s", outlier,
                     "not found" if stamp is None else f"of {int(stamp[0].sum())} pixels ({stamp[2]:.3f})")
        if stamp is not None:
            return OutlierStamp(*stamp, outlier)
    if cfg.patch_margin is not None and len(searched) > 1:  # a stamp by its lead, where smaller
        lead = margin_patch(model, x, searched, cfg.patch_margin, cfg.patch_margin_floor, before, ranks=ranks)
        if lead is not None and (best is None or lead[0].sum() < best[0].sum()):
            logger.debug("class search: class %d's stamp of %d pixels by its lead (%.3f)", lead[3],
                         int(lead[0].sum()), lead[2])
            best = lead
    return best


def class_stamps(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                 x: torch.Tensor, cfg: IBAUConfig, steps: int, num_classes: int, *, ranks: Ranks = SINGLE,
                 before: torch.Tensor | None = None, skip: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor,
                                                                                          float, int]]:
    """Every class's stamp that sends at least ``cfg.patch_threshold`` of the other-class clean images ``x`` to that
    class (``patch_also``): one sparse targeted δ per class (:func:`targeted_delta`, ``steps`` steps) read as
    :func:`delta_patch` reads δ; the found ones as ``(mask, pattern, rate, class)``, smallest first (then the highest
    rate), ``skip``'s left out (the class whose stamp the round already has). A model with several patch backdoors
    has several, where one stamp a round takes only the smallest (docs/presets.md, stop 59). Clean data only; across
    ``ranks`` as :func:`class_patch`."""
    if before is None:
        with torch.no_grad():
            before = ranks.forward(model, ranks.shard(x)).argmax(1)
    found = []
    for target in range(num_classes):
        if target == skip:
            continue
        delta = targeted_delta(model, batches, x[0], target, cfg, steps, ranks=ranks)
        stamp = delta_patch(model, x, delta, cfg.patch_threshold, before=before, ranks=ranks)
        if stamp is None:
            continue
        mask, pattern, _ = stamp  # its rate is for the class it sends most images to: it must be this one

        def stamped(images: torch.Tensor, m: torch.Tensor = mask, p: torch.Tensor = pattern) -> torch.Tensor:
            return (1 - m) * images + m * p

        rate = sent_rate(model, x, before, stamped, target, ranks=ranks)
        if rate >= cfg.patch_threshold:
            found.append((mask, pattern, rate, target))
    return sorted(found, key=lambda s: (int(s[0].sum()), -s[2], s[3]))


def margin_patch(model: nn.Module, x: torch.Tensor, deltas: dict[int, torch.Tensor], margin: float, floor: float,
                 before: torch.Tensor, sizes: tuple[int, ...] = PATCH_SIZES, chunk: int = 50, *,
                 ranks: Ranks = SINGLE) -> tuple[torch.Tensor, torch.Tensor, float, int] | None:
    """The class search's stamp by its lead: the smallest size at which one
    class's stamp (of its sparse targeted δ, ``deltas[class]``) sends at least ``floor`` of the clean images
    ``x`` to one class and at least ``margin`` more of them than any other class's stamp of that size does.
    A backdoor's target stands out like this even where its trigger is too weak for the threshold (the
    authors' checkpoint, 500 clean images: 81% at 36 pixels where no other class passes 38%). Returns
    ``(mask, pattern, rate, class)`` or None. Every class of ``deltas`` is scored at every size (no early
    stop); after the class screen (``patch_screen``) those are the classes it kept."""
    parts = {c: _stamp_parts(d, x.dtype) for c, d in deltas.items()}
    with torch.no_grad():
        for k in sizes:
            if k > next(iter(parts.values()))[0].numel() // 16:
                break
            stamps = {c: (_stamp_mask(deltas[c], order, k, x.dtype), pattern) for c, (order, pattern) in parts.items()}
            rates = {c: _stamp_rate(model, x, before, m, p, 0.0, chunk, ranks) or 0.0 for c, (m, p) in stamps.items()}
            ranked = sorted(rates, key=lambda c: rates[c], reverse=True)
            lead, second = ranked[0], ranked[1]
            logger.debug("class search by lead, %d pixels: class %d %.3f, class %d %.3f", k, lead, rates[lead],
                         second, rates[second])
            if rates[lead] >= floor and rates[lead] - rates[second] >= margin:
                return (*stamps[lead], rates[lead], lead)
    return None


#: clean images on which the screen scores each class's stamps (the full search scores all it is given)
SCREEN_SAMPLE = 200


def screen_classes(model: nn.Module, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                   x: torch.Tensor, before: torch.Tensor, cfg: IBAUConfig, num_classes: int, *,
                   ranks: Ranks = SINGLE) -> dict[int, torch.Tensor]:
    """The class search's screen: ``cfg.patch_screen`` steps of :func:`targeted_delta` for every class, then
    the ``cfg.patch_candidates`` classes whose δ looks most like a trigger, each with its δ so far
    (``{class: δ}``). "Most like a trigger": the highest rate of its stamps of 16 and 64 pixels towards its
    class (:func:`screen_rate`, on the first :data:`SCREEN_SAMPLE` clean images ``x``, whose model
    predictions on this rank's share are ``before``), then the lowest cross-entropy to the class over the
    screen's second half. On the traces of benchmarks/class_screen.py (docs/presets.md, "A screen for the
    class search") the stamp rate ranked the full search's winner first after 3 to 20 steps where ‖δ‖₁,
    Neural Cleanse's criterion, ranked it last of 43 (GTSRB Smooth) and the cross-entropy 3rd to 5th."""
    screened: dict[int, tuple[float, float, torch.Tensor]] = {}
    for target in range(num_classes):
        losses: list[float] = []
        delta = targeted_delta(model, batches, x[0], target, cfg, cfg.patch_screen, ranks=ranks,
                               on_step=_appender(losses))
        tail = losses[len(losses) // 2:]
        screened[target] = (-screen_rate(model, x, before, delta, target, ranks=ranks), sum(tail) / len(tail), delta)
    kept = sorted(screened, key=lambda c: screened[c][:2])[:cfg.patch_candidates]
    logger.debug("class search screen: classes %s kept of %d", kept, num_classes)
    return {c: screened[c][2] for c in kept}


def screen_rate(model: nn.Module, x: torch.Tensor, before: torch.Tensor, delta: torch.Tensor, target: int, *,
                ranks: Ranks = SINGLE) -> float:
    """The highest share, over stamps of δ's 16 and 64 strongest pixels (as :func:`delta_patch` builds them),
    of the first :data:`SCREEN_SAMPLE` images of ``x`` not predicted as ``target`` that the stamp sends there.
    ``before``: the model's predictions on this rank's share of ``x``; the counts are summed over ``ranks``."""
    n = -(-SCREEN_SAMPLE // ranks.world) * ranks.world  # a multiple of the ranks: each scores rows of its share
    share = ranks.shard(x[:n])
    others = before[:len(share)] != target
    order, pattern = _stamp_parts(delta, x.dtype)
    sizes = [k for k in (16, 64) if k <= order.numel() // 16] or [min(PATCH_SIZES)]
    best = 0.0
    with torch.no_grad():
        for k in sizes:
            mask = _stamp_mask(delta, order, k, x.dtype)
            sent = ranks.forward(model, (1 - mask) * share + mask * pattern).argmax(1) == target
            total, hits = ranks.all_reduce_sum(others.sum(), (others & sent).sum())
            best = max(best, float(hits) / max(float(total), 1.0))
    return best


def sent_rate(model: nn.Module, x: torch.Tensor, before: torch.Tensor, apply: Callable[[torch.Tensor], torch.Tensor],
              target: int, *, ranks: Ranks = SINGLE) -> float:
    """The share of the images of ``x`` not predicted as ``target`` (``before``: the predictions on this rank's
    share) that ``apply`` (a found trigger put on images) sends to ``target``; the counts are summed over ``ranks``."""
    share = ranks.shard(x)
    others = before[:len(share)] != target
    with torch.no_grad():
        sent = ranks.forward(model, apply(share)).argmax(1) == target
    total, hits = ranks.all_reduce_sum(others.sum(), (others & sent).sum())
    return float(hits) / max(float(total), 1.0)


def screened_search(search: Callable[[int, int, torch.Tensor | None], torch.Tensor],
                    rate: Callable[[torch.Tensor, int, torch.Tensor, torch.Tensor], float], model: nn.Module,
                    x: torch.Tensor, steps: int, screen: int, num_classes: int, *, target: int | None = None,
                    ranks: Ranks = SINGLE, before: torch.Tensor | None = None, notes: dict | None = None,
                    gate: Callable[[list[float]], bool] | None = None) -> tuple[torch.Tensor, int, float]:
    """A targeted trigger search with a screen over the classes (the smooth and the blended searches):
    ``search(class, steps, start)`` returns the trigger's parameters after ``steps`` steps from ``start`` (None:
    from scratch); ``rate(parameters, class, images, before)`` the share of ``images`` it sends to the class.

    With ``target`` None every class is searched for ``screen`` steps and the one whose trigger sends the largest
    share of the first :data:`SCREEN_SAMPLE` images of ``x`` to it is continued (ties: the lowest class);
    otherwise ``target``'s trigger is searched from scratch. Either way it gets ``steps`` steps in all. Returns
    ``(parameters, class, rate on x)``. ``before``: the model's predictions on this rank's share of ``x`` when the
    caller has them; ``notes`` (a dict, when given) gets the screen's rate of every class (``rates``). ``gate``:
    a test of the screen's rates; when it fails, the kept class is not searched further and the screen's own
    parameters and rate (on the sample) are returned, with ``notes["gated"]`` True."""
    if before is None:
        with torch.no_grad():
            before = ranks.forward(model, ranks.shard(x)).argmax(1)
    sample = x[:-(-SCREEN_SAMPLE // ranks.world) * ranks.world]  # a multiple of the ranks: rows of each share
    start = None
    if target is None:
        screened = []
        for c in range(num_classes):
            found = search(c, screen, None)
            screened.append((rate(found, c, sample, before), -c, found))
        _, neg, start = max(screened, key=lambda s: s[:2])
        rates = [s[0] for s in screened]
        if notes is not None:
            notes["rates"] = [round(r, 4) for r in rates]
        target, steps = -neg, steps - screen
        if gate is not None and not gate(rates):
            if notes is not None:
                notes["gated"] = True
            return start, target, rates[target]
    found = search(target, max(steps, 0), start)
    return found, target, rate(found, target, x, before)


def _appender(losses: list[float]) -> Callable[[torch.Tensor, float], None]:
    """An ``on_step`` callback of :func:`targeted_delta` that keeps each step's cross-entropy."""
    return lambda _, ce: losses.append(ce)
