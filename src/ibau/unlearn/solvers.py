"""Linear solvers for the implicit hypergradient, as strategies ``(matvec, b, x0) -> x`` solving A·x = b.

``A`` is the Hessian of the inner (minimisation) objective with respect to δ; ``matvec`` gives A·v by
reverse-mode autodiff, so A is never materialised. Solvers only see ``matvec`` and tensors, which keeps
the optimality condition (in :mod:`ibau.unlearn.hypergrad`) separate from the linear algebra.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

MatVec = Callable[[torch.Tensor], torch.Tensor]


class LinearSolver(Protocol):
    def __call__(self, matvec: MatVec, b: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor: ...


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()


def fixed_point(matvec: MatVec, b: torch.Tensor, x0: torch.Tensor | None = None, *, iters: int = 5,
                lr: float = 0.1) -> torch.Tensor:
    """Fixed-point (Neumann / Richardson) iteration ``x ← x + lr·(b − A·x)``.

    Started from ``x0 = None`` it returns ``lr · Σ_{j=0}^{iters} (I − lr·A)^j b``: exactly the I-BAU
    authors' ``v ← (∂Φ/∂δ)ᵀ v + ∂L_out/∂δ`` (K = ``iters`` updates of the map Φ(δ) = δ − lr·∇_δ L_in),
    after rescaling by ``lr``. Converges when ``0 < lr < 2 / λ_max(A)`` and A is positive definite.
    ``iters`` matrix-vector products are used.
    """
    if iters < 0:
        raise ValueError(f"fixed-point iterations must be >= 0, got {iters}")
    if x0 is None:
        term, total = b, b.clone()
        for _ in range(iters):  # Neumann partial sums: one matvec per term
            term = term - lr * matvec(term)
            total = total + term
        return lr * total
    x = x0
    for _ in range(iters):
        x = x + lr * (b - matvec(x))
    return x


def conjugate_gradient(matvec: MatVec, b: torch.Tensor, x0: torch.Tensor | None = None, *, iters: int = 5,
                       tol: float = 1e-12) -> torch.Tensor:
    """Conjugate gradient for symmetric positive-definite A; ``iters`` matrix-vector products at most.

    Stops early when the residual is below ``tol`` (relative to ‖b‖) or when a direction of non-positive
    curvature appears (A is only positive definite near a strict local minimum of the inner objective).
    """
    if iters < 0:
        raise ValueError(f"CG iterations must be >= 0, got {iters}")
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b.clone() if x0 is None else b - matvec(x)
    p = r.clone()
    rs = _dot(r, r)
    stop = tol * tol * max(float(_dot(b, b)), 1e-300)
    for _ in range(iters):
        if float(rs) <= stop:
            break
        ap = matvec(p)
        curvature = _dot(p, ap)
        if float(curvature) <= 0:
            break
        alpha = rs / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _dot(r, r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x


SOLVERS: dict[str, Callable[..., torch.Tensor]] = {"fixed_point": fixed_point, "cg": conjugate_gradient}
