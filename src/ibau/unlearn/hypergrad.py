"""The implicit hypergradient (paper eq. 2–3), for any inner/outer losses.

Bilevel problem: θ minimises L_out(δ*(θ), θ) where δ*(θ) minimises L_in(δ, θ) (for I-BAU L_in = −H,
so δ* maximises H). At a stationary δ*, the implicit function theorem gives

    ∇ψ(θ) = ∂_θ L_out − ∂²_θδ L_in · A⁻¹ ∂_δ L_out,      A = ∂²_δδ L_in,

and A⁻¹ ∂_δ L_out is approximated by an iterative solver using Hessian-vector products only. Nothing
depends on how δ was found, so the inner optimisation path is never stored (memory is independent of T).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .solvers import LinearSolver


def implicit_hypergradient(inner_loss: Callable[[torch.Tensor], torch.Tensor],
                           outer_loss: Callable[[torch.Tensor], torch.Tensor],
                           delta: torch.Tensor, params: Sequence[torch.Tensor], solver: LinearSolver,
                           x0: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Hypergradient of ``outer_loss`` w.r.t. ``params`` through ``delta = argmin inner_loss``.

    Args:
        inner_loss: ``delta -> scalar`` L_in(δ, θ); θ enters through ``params`` captured by the closure.
        outer_loss: ``delta -> scalar`` L_out(δ, θ).
        delta: the (approximate) inner solution; it is detached here.
        params: the tensors θ to differentiate with respect to (all must require grad).
        solver: ``(matvec, b, x0) -> x`` solving A·x = b (see :mod:`ibau.unlearn.solvers`).
        x0: optional warm start for the solver (e.g. the previous step's solution).

    Returns:
        ``(grads, v, outer)``: one gradient per parameter, the solver's solution v ≈ A⁻¹ ∂_δ L_out
        (for warm starts), and the detached outer loss value.
    """
    params = list(params)
    delta = delta.detach().requires_grad_(True)

    outer = outer_loss(delta)
    g_out = torch.autograd.grad(outer, [delta, *params], allow_unused=True)
    g_out_delta = g_out[0] if g_out[0] is not None else torch.zeros_like(delta)

    (g_in_delta,) = torch.autograd.grad(inner_loss(delta), delta, create_graph=True)

    def matvec(v: torch.Tensor) -> torch.Tensor:  # A·v = ∂²_δδ L_in · v
        return torch.autograd.grad(g_in_delta, delta, v, retain_graph=True)[0]

    v = solver(matvec, g_out_delta.detach(), x0).detach()
    mixed = torch.autograd.grad(g_in_delta, params, v, allow_unused=True)  # ∂²_θδ L_in · v
    grads = []
    for p, go, m in zip(params, g_out[1:], mixed):
        g = torch.zeros_like(p) if go is None else go
        grads.append(g if m is None else g - m)
    return grads, v, outer.detach()
