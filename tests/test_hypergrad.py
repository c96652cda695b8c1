"""The hypergradient against exact oracles, in float64."""
import functools

import pytest
import torch
import torch.nn.functional as F

from ibau.unlearn.hypergrad import implicit_hypergradient
from ibau.unlearn.solvers import conjugate_gradient, fixed_point

def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ---------------------------------------------------------------------------------------------
# Solvers on an explicit SPD system
# ---------------------------------------------------------------------------------------------
def _spd(n, seed=0, cond=10.0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    eig = torch.linspace(1.0, cond, n)
    return q @ torch.diag(eig) @ q.T, torch.randn(n, generator=g)


@pytest.mark.parametrize("solver,kw", [(conjugate_gradient, {}), (fixed_point, {"lr": 0.15})])
def test_solvers_converge_and_error_falls(solver, kw):
    a, b = _spd(8)
    exact = torch.linalg.solve(a, b)
    errs = [_rel(solver(lambda v: a @ v, b, iters=k, **kw), exact) for k in (1, 3, 6, 400)]
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-10


def test_solvers_warm_start_from_solution_stays_there():
    a, b = _spd(5)
    exact = torch.linalg.solve(a, b)
    for solver, kw in [(conjugate_gradient, {}), (fixed_point, {"lr": 0.1})]:
        assert _rel(solver(lambda v: a @ v, b, exact.clone(), iters=3, **kw), exact) < 1e-12


def test_fixed_point_matches_authors_recursion():
    """From x0=None, K iterations equal lr·v_K with v ← (I − lr·A)v + b, v_0 = b (the authors' loop)."""
    a, b = _spd(6)
    lr, k = 0.07, 5
    v = b.clone()
    for _ in range(k):
        v = v - lr * (a @ v) + b
    assert _rel(fixed_point(lambda u: a @ u, b, iters=k, lr=lr), lr * v) < 1e-12


# ---------------------------------------------------------------------------------------------
# Closed form: quadratic inner problem coupled to θ
#   L_in(δ, θ) = ½ δᵀAδ − δᵀBθ      → δ*(θ) = A⁻¹Bθ
#   L_out(δ, θ) = ½‖δ − c‖² + sᵀθ    → ∇ψ = s + Bᵀ A⁻¹ (δ* − c)
# ---------------------------------------------------------------------------------------------
def _quadratic(seed=1, n=6, m=4):
    g = torch.Generator().manual_seed(seed)
    a, _ = _spd(n, seed, cond=5.0)
    bmat, c, s = torch.randn(n, m, generator=g), torch.randn(n, generator=g), torch.randn(m, generator=g)
    theta = torch.randn(m, generator=g, requires_grad=True)
    delta_star = torch.linalg.solve(a, bmat @ theta.detach())
    exact = s + bmat.T @ torch.linalg.solve(a, delta_star - c)
    inner = lambda d: 0.5 * d @ a @ d - d @ (bmat @ theta)
    outer = lambda d: 0.5 * (d - c).pow(2).sum() + s @ theta
    return inner, outer, delta_star, theta, exact


@pytest.mark.parametrize("name,make", [
    ("cg", lambda k: functools.partial(conjugate_gradient, iters=k)),
    ("fixed_point", lambda k: functools.partial(fixed_point, iters=k, lr=0.3)),
])
def test_quadratic_closed_form(name, make):
    inner, outer, delta_star, theta, exact = _quadratic()
    iters = (1, 2, 4, 6) if name == "cg" else (1, 5, 20, 300)
    errs = []
    for k in iters:
        (g,), _, _ = implicit_hypergradient(inner, outer, delta_star, [theta], make(k))
        errs.append(_rel(g, exact))
    assert all(e2 < e1 for e1, e2 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-6, errs


def test_zero_iterations_is_the_direct_gradient_only_for_cg():
    inner, outer, delta_star, theta, exact = _quadratic()
    (g,), v, _ = implicit_hypergradient(inner, outer, delta_star, [theta], functools.partial(conjugate_gradient, iters=0))
    s = torch.autograd.grad(outer(delta_star), theta)[0]
    assert torch.allclose(g, s) and float(v.abs().max()) == 0.0


# ---------------------------------------------------------------------------------------------
# Finite differences on a small network: ψ(θ) = L_out(δ*(θ), θ), δ* solved by Newton to machine precision
# ---------------------------------------------------------------------------------------------
class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


LAMBDA = 0.5  # makes −CE + λ‖δ‖² strongly convex in δ on this net: a unique, smooth δ*(θ)


def _setup(seed=0):
    torch.manual_seed(seed)
    net = TinyNet().double()
    x = torch.rand(6, 1, 4, 4)
    y = torch.randint(0, 3, (6,))
    inner = lambda d: -F.cross_entropy(net(x + d), y) + LAMBDA * d.pow(2).sum()
    outer = lambda d: F.cross_entropy(net(torch.cat([x[:2] + d, x[2:]])), y)
    return net, inner, outer


def _solve_inner(inner, shape, start=None):
    d = torch.zeros(shape) if start is None else start.clone()
    for _ in range(50):  # Newton with the explicit 16×16 Hessian (fine for an oracle)
        d = d.detach().requires_grad_(True)
        g = torch.autograd.grad(inner(d), d)[0].flatten()
        if g.norm() < 1e-13:
            break
        h = torch.autograd.functional.hessian(lambda z: inner(z.view(shape)), d.detach().flatten())
        d = d.detach() - torch.linalg.solve(h, g).view(shape)
    return d.detach()


def test_hypergradient_matches_finite_differences():
    net, inner, outer = _setup()
    shape = (1, 4, 4)
    params = list(net.parameters())
    delta = _solve_inner(inner, shape)
    grads, _, _ = implicit_hypergradient(inner, outer, delta, params,
                                         functools.partial(conjugate_gradient, iters=100, tol=1e-14))
    flat = torch.cat([g.flatten() for g in grads])

    def psi():
        with torch.enable_grad():
            return float(outer(_solve_inner(inner, shape, start=delta)))

    eps, fd = 1e-5, []
    with torch.no_grad():
        for p in params:
            for i in range(p.numel()):
                orig = p.view(-1)[i].item()
                p.view(-1)[i] = orig + eps
                plus = psi()
                p.view(-1)[i] = orig - eps
                minus = psi()
                p.view(-1)[i] = orig
                fd.append((plus - minus) / (2 * eps))
    fd = torch.tensor(fd)
    print('relative error vs finite differences:', _rel(flat, fd))
    assert _rel(flat, fd) < 1e-4, _rel(flat, fd)
    # The implicit term matters here: the direct gradient alone is far from ψ's gradient.
    direct = torch.autograd.grad(outer(delta), params)
    assert _rel(torch.cat([g.flatten() for g in direct]), fd) > 1e-2
