"""The inner maximisation: find one universal δ that maximises the loss on the clean set."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

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
    source = batches()
    while done < steps:
        try:
            x, y = next(source)
        except StopIteration:  # more steps than batches: start another pass
            source = batches()
            continue
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
