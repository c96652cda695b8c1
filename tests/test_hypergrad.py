"""The hypergradient against exact oracles, in float64."""
import functools

import pytest
import torch
import torch.nn.functional as F

from ibau.unlearn.hypergrad import implicit_hypergradient
from ibau.unlearn.solvers import SolveStats, conjugate_gradient, fixed_point, minres


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
    """From x0=None, K iterations equal lr·v_K with v ← (I − lr·A)v + b, v_0 = 0 (the authors' loop)."""
    a, b = _spd(6)
    lr, k = 0.07, 5
    v = torch.zeros_like(b)
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


def test_no_implicit_term_skips_the_inner_graph_and_equals_k0():
    """``implicit=False`` (what solver_iters=0 runs) is the K = 0 hypergradient, without touching L_in."""
    inner, outer, delta_star, theta, exact = _quadratic()
    k0 = implicit_hypergradient(inner, outer, delta_star, [theta], functools.partial(fixed_point, iters=0, lr=0.3))

    def untouchable(d):
        raise AssertionError("L_in evaluated")

    direct = implicit_hypergradient(untouchable, outer, delta_star, [theta], None, implicit=False)
    assert torch.equal(direct[0][0], k0[0][0]) and torch.equal(direct[1], k0[1]) and torch.equal(direct[2], k0[2])
    assert _rel(direct[0][0], exact) > 1e-2  # and it is not the hypergradient


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

    fd = _fd_gradient(params, psi)
    print('relative error vs finite differences:', _rel(flat, fd))
    assert _rel(flat, fd) < 1e-4, _rel(flat, fd)
    # The implicit term matters here: the direct gradient alone is far from ψ's gradient.
    direct = torch.autograd.grad(outer(delta), params)
    assert _rel(torch.cat([g.flatten() for g in direct]), fd) > 1e-2


# ---------------------------------------------------------------------------------------------
# The constraint binds: δ* on the ℓ2 sphere or on faces of the ℓ∞ box (KKT on the tangent space)
# ---------------------------------------------------------------------------------------------
def test_sphere_closed_form_linear_inner():
    """H = ⟨a(θ), δ⟩ on ‖δ‖ ≤ C: δ* = C·a/‖a‖ (closed form). A = 0, so the unconstrained formula has no
    inverse at all; on the tangent space the system is μP with μ = ‖a‖/C."""
    g = torch.Generator().manual_seed(3)
    m, n, bound = 4, 5, 2.0
    bmat, c = torch.randn(n, m, generator=g), torch.randn(n, generator=g)
    theta = torch.randn(m, generator=g, requires_grad=True)
    a = lambda t: torch.tanh(bmat @ t) + 0.3
    inner = lambda d: -(a(theta) * d).sum()
    outer = lambda d: 0.5 * (d - c).pow(2).sum() + (theta ** 2).sum()
    delta_star = bound * a(theta).detach() / a(theta).detach().norm()
    exact = torch.autograd.grad(outer(bound * a(theta) / a(theta).norm()), theta)[0]
    for solver in (functools.partial(conjugate_gradient, iters=3), functools.partial(minres, iters=3)):
        (grad,), v, _ = implicit_hypergradient(inner, outer, delta_star, [theta], solver, norm="l2", bound=bound)
        assert _rel(grad, exact) < 1e-10
        assert abs(float(v @ delta_star)) < 1e-10  # nothing moves along δ


def _kkt_sphere(inner, shape, bound, start, descent_steps=3000):
    """δ* of min L_in s.t. ‖δ‖ = bound: projected descent, then Newton on the KKT system (∇L + μδ, ‖δ‖²−C²)."""
    d = start.clone()
    for _ in range(descent_steps):
        d = d.detach().requires_grad_(True)
        gr = torch.autograd.grad(inner(d), d)[0]
        d = d.detach() - 0.2 * gr
        d = d * (bound / d.norm())
    d = d.detach().flatten()
    dv = d.clone().requires_grad_(True)
    mu = -float((torch.autograd.grad(inner(dv.view(shape)), dv)[0] @ d) / d.dot(d))
    for _ in range(30):
        dv = d.clone().requires_grad_(True)
        gr = torch.autograd.grad(inner(dv.view(shape)), dv)[0]
        res = torch.cat([gr + mu * d, (0.5 * (d.dot(d) - bound ** 2)).view(1)])
        if res.norm() < 1e-14:
            break
        h = torch.autograd.functional.hessian(lambda z: inner(z.view(shape)), d)
        n = d.numel()
        kkt = torch.zeros(n + 1, n + 1)
        kkt[:n, :n], kkt[:n, n], kkt[n, :n] = h + mu * torch.eye(n), d, d
        step = torch.linalg.solve(kkt, -res)
        d, mu = d + step[:n], mu + float(step[n])
    return d.view(shape).detach(), mu


SPHERE_BOUND = 0.6


def _sphere_setup():
    torch.manual_seed(4)
    net = TinyNet().double()
    x = torch.rand(6, 1, 4, 4)
    y = torch.randint(0, 3, (6,))
    inner = lambda d: -F.cross_entropy(net(x + d), y) + 0.001 * d.pow(2).sum()  # the authors' λ: not convex
    outer = lambda d: F.cross_entropy(net(torch.cat([x[:2] + d, x[2:]])), y)
    return net, inner, outer


def _fd_gradient(params, psi, eps=1e-5):
    fd = []
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
    return torch.tensor(fd)


def test_sphere_hypergradient_matches_finite_differences_where_a_is_indefinite():
    net, inner, outer = _sphere_setup()
    shape, params = (1, 4, 4), list(net.parameters())
    start = torch.full(shape, 0.1)
    delta, mu = _kkt_sphere(inner, shape, SPHERE_BOUND, start)
    assert abs(float(delta.norm()) - SPHERE_BOUND) < 1e-12 and mu > 0  # the constraint binds
    hess = torch.autograd.functional.hessian(lambda z: inner(z.view(shape)), delta.flatten())
    eig = torch.linalg.eigvalsh(hess)
    assert eig.min() < 0 < eig.max()  # A = ∇²L_in is indefinite at δ*: the unconstrained IFT does not apply
    unit = delta.flatten() / delta.norm()
    proj = torch.eye(16) - torch.outer(unit, unit)
    tangent = torch.linalg.eigvalsh(proj @ (hess + mu * torch.eye(16)) @ proj)
    assert tangent[1:].min() > 0  # strict constrained optimum: P(A + μI)P is positive definite on T

    def psi():
        with torch.enable_grad():
            return float(outer(_kkt_sphere(inner, shape, SPHERE_BOUND, delta, descent_steps=0)[0]))

    fd = _fd_gradient(params, psi)
    for solver in (functools.partial(conjugate_gradient, iters=100, tol=1e-14),
                   functools.partial(minres, iters=100, tol=1e-14)):
        grads, _, _ = implicit_hypergradient(inner, outer, delta, params, solver, norm="l2", bound=SPHERE_BOUND)
        err = _rel(torch.cat([g.flatten() for g in grads]), fd)
        print(f'sphere, {solver.func.__name__}: relative error vs finite differences {err:.2e}')
        assert err < 1e-4, err
    # Ignoring the constraint (the unconstrained formula, solved exactly by MINRES) is wrong here.
    grads, _, _ = implicit_hypergradient(inner, outer, delta, params, functools.partial(minres, iters=100, tol=1e-14))
    assert _rel(torch.cat([g.flatten() for g in grads]), fd) > 1e-2


def _authors_projected_fixed_point(inner, outer, delta, params, bound, alpha, k):
    """The authors' hypergradient, literally, for the map of Algorithm 1's inner step with its projection:
    Φ(δ, θ) = Π(δ − α∇_δ L_in), v ← (∂Φ/∂δ)ᵀv + ∂L_out/∂δ from v = 0, K times, then ∂L_out/∂θ + (∂Φ/∂θ)ᵀv."""
    def phi(d):
        y = d - alpha * torch.autograd.grad(inner(d), d, create_graph=True)[0]
        return y * torch.clamp(bound / y.norm(), max=1.0)  # Π onto the ball ‖δ‖ ≤ bound

    d = delta.detach().requires_grad_(True)
    mapped = phi(d)
    g_out = torch.autograd.grad(outer(d), [d, *params])
    v = torch.zeros_like(d)
    for _ in range(k):
        v = torch.autograd.grad(mapped, d, v, retain_graph=True)[0] + g_out[0]
    mixed = torch.autograd.grad(mapped, params, v)
    return torch.cat([(g + m).flatten() for g, m in zip(g_out[1:], mixed)])


@functools.lru_cache(maxsize=1)
def _sphere_optimum():  # one KKT solve for the tests below (they only read it)
    net, inner, outer = _sphere_setup()
    shape, params = (1, 4, 4), list(net.parameters())
    delta, mu = _kkt_sphere(inner, shape, SPHERE_BOUND, torch.full(shape, 0.1))
    return net, inner, outer, delta, mu, params


@pytest.mark.parametrize("k", [1, 2, 5])
def test_projected_fixed_point_is_the_authors_recursion_through_the_projection(k):
    """``projection_step=α`` divides the tangent system by 1 + αμ: K Richardson steps on it are the authors' K
    for the projected map, to float64 precision, including where αμ > 2 (Cδ small: μ large)."""
    net, inner, outer, delta, mu, params = _sphere_optimum()
    alpha = 3.0 / mu  # αμ = 3: beyond the undivided iteration's limit of 2
    authors = _authors_projected_fixed_point(inner, outer, delta, params, SPHERE_BOUND, alpha, k)
    grads, _, _ = implicit_hypergradient(inner, outer, delta, params, functools.partial(fixed_point, iters=k, lr=alpha),
                                         norm="l2", bound=SPHERE_BOUND, projection_step=alpha)
    assert _rel(torch.cat([g.flatten() for g in grads]), authors) < 1e-10


def test_projected_fixed_point_converges_where_the_undivided_one_diverges():
    """With αμ = 3 the undivided Richardson iteration on P(A + μI)P grows without bound; divided by 1 + αμ (the
    projection's Jacobian) it converges to the exact constrained hypergradient, which MINRES gives."""
    net, inner, outer, delta, mu, params = _sphere_optimum()
    alpha = 3.0 / mu
    hess = torch.autograd.functional.hessian(lambda z: inner(z.view(1, 4, 4)), delta.flatten())
    unit = delta.flatten() / delta.norm()
    proj = torch.eye(16) - torch.outer(unit, unit)
    tangent = torch.linalg.eigvalsh(proj @ (hess + mu * torch.eye(16)) @ proj)[1:]  # the normal direction's 0 left out
    assert float(alpha * tangent.max()) > 2 > float(alpha * tangent.max() / (1 + alpha * mu))  # the test's premise
    exact, _, _ = implicit_hypergradient(inner, outer, delta, params, functools.partial(minres, iters=100, tol=1e-14),
                                         norm="l2", bound=SPHERE_BOUND)
    exact = torch.cat([g.flatten() for g in exact])

    def error(k, step):
        solver = functools.partial(fixed_point, iters=k, lr=alpha)
        grads, _, _ = implicit_hypergradient(inner, outer, delta, params, solver, norm="l2", bound=SPHERE_BOUND,
                                             projection_step=step)
        return _rel(torch.cat([g.flatten() for g in grads]), exact)

    divided = [error(k, alpha) for k in (2, 20, 400)]
    undivided = [error(k, 0.0) for k in (2, 20, 60)]
    assert divided[-1] < 1e-8 and divided[0] > divided[1] > divided[2], divided
    assert undivided[-1] > 1e3 and undivided[2] > undivided[1] > undivided[0], undivided


def test_box_faces_hypergradient_matches_finite_differences():
    net, inner, outer = _setup()  # λ = 0.5: strongly convex L_in, a unique δ*
    shape, params = (1, 4, 4), list(net.parameters())
    free_opt = _solve_inner(inner, shape)
    bound = float(free_opt.abs().flatten().median())  # about half of the coordinates end on a face

    def solve_box(start, held=None):
        d = start.clone()
        if held is None:
            for _ in range(4000):  # projected gradient on a strongly convex problem: linear convergence
                d = d.detach().requires_grad_(True)
                d = (d.detach() - 0.3 * torch.autograd.grad(inner(d), d)[0]).clamp(-bound, bound)
            held = d.abs() >= bound * (1 - 1e-9)
        d, free = d.detach().flatten(), ~held.flatten()
        for _ in range(20):  # Newton on the free coordinates, the held ones at ±bound
            dv = d.clone().requires_grad_(True)
            g = torch.autograd.grad(inner(dv.view(shape)), dv)[0][free]
            if g.norm() < 1e-14:
                break
            h = torch.autograd.functional.hessian(lambda z: inner(z.view(shape)), d)[free][:, free]
            d[free] -= torch.linalg.solve(h, g)
        assert bool((d.abs() <= bound * (1 + 1e-12)).all())  # the same coordinates stay held
        return d.view(shape).detach(), held

    delta, held = solve_box(torch.zeros(shape))
    assert 0 < int(held.sum()) < 16
    grads, _, _ = implicit_hypergradient(inner, outer, delta, params,
                                         functools.partial(conjugate_gradient, iters=100, tol=1e-14),
                                         norm="linf", bound=bound)

    def psi():
        with torch.enable_grad():
            return float(outer(solve_box(delta, held)[0]))

    fd = _fd_gradient(params, psi)
    err = _rel(torch.cat([g.flatten() for g in grads]), fd)
    print(f'box faces: relative error vs finite differences {err:.2e}')
    assert err < 1e-4, err


# ---------------------------------------------------------------------------------------------
# Solvers on indefinite systems
# ---------------------------------------------------------------------------------------------
def _indefinite(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    eig = torch.linspace(-2.0, 3.0, n)
    eig[eig.abs() < 0.2] = 0.5
    return q @ torch.diag(eig) @ q.T, torch.randn(n, generator=g)


def test_minres_solves_an_indefinite_system_and_reports_its_residual():
    a, b = _indefinite()
    exact = torch.linalg.solve(a, b)
    stats = SolveStats()
    x = minres(lambda v: a @ v, b, iters=12, stats=stats)
    assert _rel(x, exact) < 1e-10 and stats.matvecs == 12 and stats.residual < 1e-10
    residuals = []
    for k in (1, 3, 6, 9):
        st = SolveStats()
        xk = minres(lambda v: a @ v, b, iters=k, stats=st)
        assert abs(st.residual - float((b - a @ xk).norm() / b.norm())) < 1e-10  # reported = true residual
        residuals.append(st.residual)
    assert all(r2 <= r1 for r1, r2 in zip(residuals, residuals[1:]))  # minimal residual: never rises


def test_cg_says_when_curvature_makes_its_answer_meaningless():
    a, b = _indefinite()
    exact = torch.linalg.solve(a, b)
    stats = SolveStats()
    x = conjugate_gradient(lambda v: a @ v, b, iters=100, stats=stats)
    assert stats.breakdown == "negative_curvature"
    assert _rel(x, exact) > 0.5 and stats.residual > 0.5  # nothing was solved, and the stats say so
    ok = SolveStats()
    spd, rhs = _spd(8)
    conjugate_gradient(lambda v: spd @ v, rhs, iters=100, stats=ok)
    assert ok.breakdown is None and ok.residual < 1e-10


def test_fixed_point_k_is_the_authors_k():
    """K iterations from v = 0 are the authors' K: K = 1 is lr·b, K = 0 no implicit term at all."""
    a, b = _spd(6)
    lr = 0.07
    assert float(fixed_point(lambda u: a @ u, b, iters=0, lr=lr).abs().max()) == 0.0
    assert _rel(fixed_point(lambda u: a @ u, b, iters=1, lr=lr), lr * b) < 1e-15
    stats = SolveStats()
    fixed_point(lambda u: a @ u, b, iters=5, lr=lr, stats=stats)
    assert stats.matvecs == 4
