"""The implicit hypergradient (paper eq. 2–3), for any inner/outer losses, where δ* really sits.

Bilevel problem: θ minimises ψ(θ) = L_out(δ*(θ), θ) where δ*(θ) minimises L_in(δ, θ) over the feasible
set ‖δ‖ ≤ Cδ (for I-BAU L_in = −H, so δ* maximises H).

- **Unconstrained, or the constraint does not bind** (δ* stationary, ∇_δ L_in = 0): the implicit function
  theorem gives ``∇ψ = ∂_θ L_out − ∂²_θδ L_in · A⁻¹ ∂_δ L_out`` with ``A = ∂²_δδ L_in``.
- **On the ℓ2 sphere** ‖δ*‖ = Cδ (the usual case: the ascent ends on the boundary): δ* is a KKT point,
  ``∇_δ L_in + μ δ* = 0`` with ``μ = −⟨∇_δ L_in, δ*⟩ / Cδ² ≥ 0``, and δ* can only move along the sphere's
  tangent space. Differentiating the KKT system gives the same formula with ``A`` replaced by
  ``P (A + μI) P`` on that space (P = I − δδᵀ/‖δ‖²) and ``∂_δ L_out`` by ``P ∂_δ L_out``; nothing moves
  along δ. There A itself is often indefinite, while ``P(A + μI)P`` is positive definite at a strict
  constrained optimum.
- **On faces of the ℓ∞ box**: coordinates held at ±Cδ by the constraint (the ascent pushes outward) do not
  move; the system is A restricted to the free coordinates.
- **The fixed-point solver on the sphere** (``projection_step`` α): the authors' fixed point iterates the
  Jacobian of their map, which in Algorithm 1 ends with the projection: Φ(δ) = Π(δ − α∇_δ L_in). At δ* on the
  sphere δ* − α∇_δ L_in = (1 + αμ)δ*, where Π's Jacobian is P/(1 + αμ); K iterations of that map's fixed point
  are exactly K Richardson steps of size α on the system above divided by (1 + αμ), b included. The solution
  is the same, but the iteration contracts whatever μ is, where the undivided one needs α(λ + μ) < 2 and μ grows
  as Cδ shrinks (GTSRB, Cδ = 0.5: αμ ≈ 2.2).

The inverse-Hessian-vector product is left to a solver strategy ``(matvec, b, x0) -> x`` using
Hessian-vector products only. Nothing depends on how δ was found, so the inner optimisation path is never
stored (memory is independent of T).

Data-parallel: when each process holds one part of sums L_in = Σ_r L_in,r and L_out = Σ_r L_out,r (its
share of the images, :mod:`ibau.unlearn.distributed`), ``all_reduce`` sums ∂_δ L_out and ∇_δ L_in (for the
active set), every product A·v and the final gradients over the processes, so each solves the same system
and returns the same hypergradient. DDP's backward hooks do not apply: every derivative here is an
``autograd.grad``, so the sums are explicit.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .solvers import LinearSolver, SolveStats

#: δ counts as on the boundary when within this relative distance of it.
BOUNDARY_RTOL = 1e-4


@dataclass
class ActiveSet:
    """The part of the constraint binding at δ: the hypergradient's linear system lives on its tangent space.

    ``kind`` is ``"none"`` (nothing binds), ``"l2_sphere"`` or ``"linf_faces"``; ``shift`` is the KKT
    multiplier μ of ‖δ‖ ≤ Cδ (0 otherwise); ``free`` is the mask of ℓ∞ coordinates that may move.
    """

    kind: str = "none"
    shift: float = 0.0
    direction: torch.Tensor | None = None   # unit δ on the sphere
    free: torch.Tensor | None = None        # bool mask for box faces

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """P·v: onto the tangent space of the active constraint."""
        if self.kind == "l2_sphere" and self.direction is not None:
            return v - (v * self.direction).sum() * self.direction
        if self.kind == "linf_faces" and self.free is not None:
            return v * self.free
        return v


def active_set(delta: torch.Tensor, grad_inner: torch.Tensor, norm: str, bound: float | None,
               rtol: float = BOUNDARY_RTOL) -> ActiveSet:
    """Which constraint binds at ``delta`` given ∇_δ L_in there (``grad_inner``)."""
    delta, grad_inner = delta.detach(), grad_inner.detach()
    if norm == "l2" and bound is not None:
        size = float(delta.norm())
        if size >= (1 - rtol) * bound and size > 0:
            mu = -float((grad_inner * delta).sum()) / size ** 2
            return ActiveSet("l2_sphere", shift=mu, direction=delta / size)
    elif norm == "linf" and bound is not None:
        # held: on a face and pushed outward by the ascent on H (= descent on L_in)
        held = (delta.abs() >= (1 - rtol) * bound) & (grad_inner * delta < 0)
        if bool(held.any()):
            return ActiveSet("linf_faces", free=(~held).to(delta.dtype))
    return ActiveSet()


def implicit_hypergradient(inner_loss: Callable[[torch.Tensor], torch.Tensor],
                           outer_loss: Callable[[torch.Tensor], torch.Tensor],
                           delta: torch.Tensor, params: Sequence[torch.Tensor], solver: LinearSolver,
                           x0: torch.Tensor | None = None, *, norm: str = "none", bound: float | None = None,
                           damping: float = 0.0, projection_step: float = 0.0, stats: SolveStats | None = None,
                           implicit: bool = True,
                           all_reduce: Callable[..., list[torch.Tensor]] | None = None,
                           ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Hypergradient of ``outer_loss`` w.r.t. ``params`` through ``delta = argmin inner_loss`` s.t. ‖δ‖ ≤ bound.

    Args:
        inner_loss: ``delta -> scalar`` L_in(δ, θ); θ enters through ``params`` captured by the closure.
        outer_loss: ``delta -> scalar`` L_out(δ, θ).
        delta: the (approximate) inner solution; it is detached here.
        params: the tensors θ to differentiate with respect to (all must require grad).
        solver: ``(matvec, b, x0, stats=) -> x`` solving A·x = b (see :mod:`ibau.unlearn.solvers`).
        x0: optional warm start for the solver (e.g. the previous step's solution).
        norm, bound: the inner problem's constraint (``"l2"``, ``"linf"`` or ``"none"``; Cδ). Where it
            binds at ``delta`` the system is solved on its tangent space (module docstring).
        damping: ρ ≥ 0 added to the system (A + ρI): makes CG valid on a mildly indefinite A, at a bias.
        projection_step: α > 0 divides the system and b by (1 + α·μ) on the ℓ2 sphere: what a fixed-point
            solver with step α iterates for the projected map Π(δ − α∇_δ L_in) (module docstring); 0 (default):
            undivided. The solution does not change.
        stats: optional :class:`SolveStats` the solver fills (products, residual, breakdown).
        implicit: ``False`` returns the direct gradient ∂L_out/∂θ alone (v = 0) without building L_in's
            graph: what K = 0 means, at the cost of one backward pass.
        all_reduce: ``(*tensors) -> [their sums over the processes]`` when the losses are this process's
            part of sums over several (module docstring); None: one process.

    Returns:
        ``(grads, v, outer)``: one gradient per parameter, the solver's solution v ≈ A⁻¹ ∂_δ L_out
        (for warm starts), and the detached outer loss value.
    """
    params = list(params)
    total = all_reduce if all_reduce is not None else _alone
    delta = delta.detach().requires_grad_(True)

    outer = outer_loss(delta)
    g_out = torch.autograd.grad(outer, [delta, *params], allow_unused=True)
    g_out_delta = g_out[0] if g_out[0] is not None else torch.zeros_like(delta)
    if not implicit:  # the direct term only: no graph of ∇_δ L_in, no solve, no mixed product
        direct = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_out[1:])]
        *direct, outer_total = total(*direct, outer.detach())
        return direct, torch.zeros_like(delta), outer_total

    (g_in_delta,) = torch.autograd.grad(inner_loss(delta), delta, create_graph=True)
    if bound is None:  # nothing can bind: the active set does not read ∇_δ L_in, which stays this process's
        (g_out_delta,), g_in_whole = total(g_out_delta.detach()), g_in_delta
    else:
        g_out_delta, g_in_whole = total(g_out_delta.detach(), g_in_delta.detach())
    active = active_set(delta, g_in_whole, norm, bound)
    shift = active.shift + damping
    scale = 1.0 + projection_step * active.shift if active.kind == "l2_sphere" else 1.0  # Π's Jacobian: P / scale

    def matvec(v: torch.Tensor) -> torch.Tensor:  # P (A + μI + ρI) P v / scale
        pv = active.project(v)
        av = torch.autograd.grad(g_in_delta, delta, pv, retain_graph=True, allow_unused=True)[0]
        av = torch.zeros_like(pv) if av is None else av  # L_in linear in δ: A = 0
        (av,) = total(av)
        return active.project(av + shift * pv) / scale

    b = active.project(g_out_delta.detach()) / scale
    v = solver(matvec, b, None if x0 is None else active.project(x0), stats=stats)
    v = active.project(v.detach())
    mixed = torch.autograd.grad(g_in_delta, params, v, allow_unused=True)  # ∂²_θδ L_in · v
    grads = []
    for p, go, m in zip(params, g_out[1:], mixed):
        g = torch.zeros_like(p) if go is None else go
        grads.append(g if m is None else g - m)
    *grads, outer_total = total(*grads, outer.detach())
    return grads, v, outer_total


def _alone(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """The sums over one process: the tensors themselves."""
    return list(tensors)
