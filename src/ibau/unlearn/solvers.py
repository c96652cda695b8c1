"""Linear solvers for the implicit hypergradient, as strategies ``(matvec, b, x0) -> x`` solving A·x = b.

``A`` is the Hessian of the inner (minimisation) objective with respect to δ, restricted to the tangent
space of the active constraint (see :mod:`ibau.unlearn.hypergrad`); ``matvec`` gives A·v by reverse-mode
autodiff, so A is never materialised. Solvers only see ``matvec`` and tensors, which keeps the optimality
condition separate from the linear algebra.

Which solver is valid where:

- :func:`conjugate_gradient` needs A symmetric positive definite (a strict local minimum of L_in). On an
  indefinite A it meets a direction of non-positive curvature; it then stops and *says so* in ``stats``
  (``breakdown="negative_curvature"``): what it returns there solves nothing.
- :func:`minres` needs A symmetric only; it minimises the residual ‖b − A·x‖ over the Krylov space, so it
  is meaningful on an indefinite A (a saddle of the inner problem) and on a singular one.
- :func:`fixed_point` (Neumann / Richardson) converges only when the eigenvalues of A lie in (0, 2/lr); with
  a few iterations it is a scaled, smoothed identity, whatever A is.

Every solver fills an optional :class:`SolveStats` (matrix-vector products, relative residual, breakdown),
which :func:`ibau.unlearn.unlearn` aggregates per round so a user can see when a solve meant nothing.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SolveStats:
    """What one solve did: filled by the solver when passed as ``stats=``."""

    matvecs: int = 0
    residual: float = math.nan   # ‖b − A·x‖ / ‖b‖ at the returned x (nan where it was not computed)
    breakdown: str | None = None  # "negative_curvature" (CG on an indefinite A) or None


class LinearSolver(Protocol):
    def __call__(self, matvec: MatVec, b: torch.Tensor, x0: torch.Tensor | None = None, *,
                 stats: SolveStats | None = None) -> torch.Tensor: ...


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()


def _counting(matvec: MatVec, stats: SolveStats) -> MatVec:
    def counted(v: torch.Tensor) -> torch.Tensor:
        stats.matvecs += 1
        return matvec(v)
    return counted


def fixed_point(matvec: MatVec, b: torch.Tensor, x0: torch.Tensor | None = None, *, iters: int = 5,
                lr: float = 0.1, stats: SolveStats | None = None) -> torch.Tensor:
    """Fixed-point (Richardson) iteration ``x ← x + lr·(b − A·x)``, ``iters`` times from ``x0`` (default 0).

    From 0, K iterations give ``lr · Σ_{j<K} (I − lr·A)^j b``: exactly the I-BAU authors' hypergradient
    with their K (``v ← (∂Φ/∂δ)ᵀ v + ∂L_out/∂δ`` from v = 0, K times, for the map Φ(δ) = δ − lr·∇_δ L_in),
    after rescaling by ``lr``. K = 0 gives x = 0 (no implicit term). The first iteration from 0 needs no
    product, so K iterations cost K − 1 matrix-vector products (K from a warm start).
    Converges when the eigenvalues of A lie in (0, 2/lr).
    """
    if iters < 0:
        raise ValueError(f"fixed-point iterations must be >= 0, got {iters}")
    stats = stats if stats is not None else SolveStats()
    mv = _counting(matvec, stats)
    if x0 is None:
        if iters == 0:
            return torch.zeros_like(b)
        x = lr * b
        iters -= 1
    else:
        x = x0
    for _ in range(iters):
        x = x + lr * (b - mv(x))
    return x


def conjugate_gradient(matvec: MatVec, b: torch.Tensor, x0: torch.Tensor | None = None, *, iters: int = 5,
                       tol: float = 1e-12, stats: SolveStats | None = None) -> torch.Tensor:
    """Conjugate gradient for symmetric positive-definite A; ``iters`` matrix-vector products at most.

    Stops early when the residual is below ``tol`` (relative to ‖b‖). On a direction of non-positive
    curvature (A is not positive definite) it stops, returns the last iterate and records
    ``breakdown="negative_curvature"`` in ``stats``: use :func:`minres`, or damp A, there.
    """
    if iters < 0:
        raise ValueError(f"CG iterations must be >= 0, got {iters}")
    stats = stats if stats is not None else SolveStats()
    mv = _counting(matvec, stats)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b.clone() if x0 is None else b - mv(x)
    p = r.clone()
    rs = _dot(r, r)
    b_norm = max(float(_dot(b, b)) ** 0.5, 1e-300)
    for _ in range(iters):
        if float(rs) ** 0.5 <= tol * b_norm:
            break
        ap = mv(p)
        curvature = _dot(p, ap)
        if float(curvature) <= 0:
            stats.breakdown = "negative_curvature"
            break
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _dot(r, r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    stats.residual = float(rs) ** 0.5 / b_norm
    return x


def minres(matvec: MatVec, b: torch.Tensor, x0: torch.Tensor | None = None, *, iters: int = 5,
           tol: float = 1e-12, stats: SolveStats | None = None) -> torch.Tensor:
    """MINRES (Paige & Saunders, 1975) for symmetric, possibly indefinite or singular A.

    Minimises ‖b − A·x‖ over x0 + the Krylov space of the initial residual; ``iters`` matrix-vector
    products at most; stops when the residual is below ``tol`` (relative to ‖b‖).
    """
    if iters < 0:
        raise ValueError(f"MINRES iterations must be >= 0, got {iters}")
    stats = stats if stats is not None else SolveStats()
    mv = _counting(matvec, stats)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b.clone() if x0 is None else b - mv(x)
    b_norm = max(float(_dot(b, b)) ** 0.5, 1e-300)
    beta = float(_dot(r, r)) ** 0.5
    phi_bar = beta
    if beta <= tol * b_norm or iters == 0:
        stats.residual = beta / b_norm
        return x
    # Lanczos: β_{k+1} v_{k+1} = A v_k − α_k v_k − β_k v_{k−1}; the tridiagonal T_k is reduced by Givens
    # rotations (c, s); the solution is updated along w_k, the columns of V_k R_k⁻¹.
    v_prev, v = torch.zeros_like(b), r / beta
    w_prev, w_prev2 = torch.zeros_like(b), torch.zeros_like(b)
    c_old, s_old, c, s = 1.0, 0.0, 1.0, 0.0   # rotations k−2 and k−1
    for _ in range(iters):
        av = mv(v)
        alpha = float(_dot(v, av))
        u = av - alpha * v - beta * v_prev
        beta_next = float(_dot(u, u)) ** 0.5
        eps = s_old * beta                      # rotation k−2 on (0, β_k)
        delta_bar = c_old * beta
        delta = c * delta_bar + s * alpha       # rotation k−1 on (δ̄, α_k)
        gamma_bar = -s * delta_bar + c * alpha
        gamma = math.hypot(gamma_bar, beta_next)
        if gamma == 0.0:  # A is zero on the Krylov space: the residual cannot fall further
            break
        c_old, s_old, c, s = c, s, gamma_bar / gamma, beta_next / gamma
        tau, phi_bar = c * phi_bar, -s * phi_bar
        w = (v - delta * w_prev - eps * w_prev2) / gamma
        x = x + tau * w
        w_prev2, w_prev = w_prev, w
        if beta_next == 0.0 or abs(phi_bar) <= tol * b_norm:
            break
        v_prev, v, beta = v, u / beta_next, beta_next
    stats.residual = abs(phi_bar) / b_norm
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {"fixed_point": fixed_point, "cg": conjugate_gradient,
                                                   "minres": minres}
