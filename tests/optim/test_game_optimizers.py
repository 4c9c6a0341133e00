"""Joint game optimizers (CGD, ACGD, extragradient, Extra-Adam, consensus), optimistic GD/Adam and
Lookahead: known contraction factors on bilinear games, the REFERENCE 1c table, mixed products against
finite differences, CG accuracy, ACGD against closed forms and the authors' package, exact resume,
mixed precision refused, the config presets and the GAN wiring."""
from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.optim.acgd import ACGD
from src.optim.base import GameOptimizer
from src.optim.cgd import CGD
from src.optim.consensus import Consensus
from src.optim.extragradient import ExtraAdam, Extragradient
from src.optim.factory import JOINT, OptimizerGroup
from src.optim.hvp import conjugate_gradient, flat_grad, mixed_vp
from src.optim.lookahead import Lookahead
from src.optim.optimistic import OptimisticAdam, OptimisticGD

CONF = Path(__file__).resolve().parents[2] / "conf"
F64 = torch.float64


# ----------------------------------------------------------------------------------------- helpers
def groups(x, y, lr_x=None, lr_y=None):
    gx = {"params": [x], "player": "x"}
    gy = {"params": [y], "player": "y"}
    if lr_x is not None:
        gx["lr"] = lr_x
    if lr_y is not None:
        gy["lr"] = lr_y
    return [gx, gy]


def zero_sum(f):
    """A closure for a zero-sum game value function f()."""
    def closure():
        v = f()
        return v, -v
    return closure


def bilinear(x, y, a):
    return lambda: a * (x @ y)


def nonlinear_game(nx=5, ny=4, seed=0):
    """A smooth nonconvex-nonconcave game with all mixed derivatives nonzero."""
    g = torch.Generator().manual_seed(seed)
    W, B = torch.randn(ny, nx, generator=g, dtype=F64), torch.randn(nx, ny, generator=g, dtype=F64)
    x0, y0 = torch.randn(nx, generator=g, dtype=F64), torch.randn(ny, generator=g, dtype=F64)

    def f(x, y):
        return (torch.tanh(W @ x) @ y + x @ B @ y + 0.3 * (x**2).sum() - 0.2 * (y**2).sum()
                + torch.sin(x).sum() * y.sum())

    return f, x0, y0


def run_gda(x, y, lr, steps, simultaneous=True, opt_cls=torch.optim.SGD, **kw):
    """Gradient descent-ascent on f = x.y with per-player optimizers."""
    ox, oy = opt_cls([x], lr=lr, **kw), opt_cls([y], lr=lr, **kw)
    for _ in range(steps):
        ox.zero_grad(), oy.zero_grad()
        x.grad = y.detach().clone()            # d(x.y)/dx, x minimises
        if simultaneous:
            y.grad = -x.detach().clone()       # y maximises: its loss is -x.y
            ox.step(), oy.step()
        else:
            ox.step()
            y.grad = -x.detach().clone()
            oy.step()
    return torch.sqrt(x.detach() @ x.detach() + y.detach() @ y.detach()).item()


def run_joint(opt_factory, steps, lr, a=1.0, n=1, start=1.0):
    x = torch.full((n,), start, dtype=F64, requires_grad=True)
    y = torch.full((n,), start, dtype=F64, requires_grad=True)
    opt = opt_factory(groups(x, y), lr)
    for _ in range(steps):
        opt.step(zero_sum(bilinear(x, y, a)))
    return torch.sqrt(x.detach() @ x.detach() + y.detach() @ y.detach()).item()


# ----------------------------------------------------------------------- bilinear contraction factors
@pytest.mark.parametrize("eta,a", [(0.1, 1.0), (0.5, 2.0), (1.0, 1.0), (3.0, 0.7)])
def test_bilinear_contraction_factors(eta, a):
    """f = a x.y, x, y in R^3: CGD contracts by 1/sqrt(1+c^2), simultaneous GDA expands by sqrt(1+c^2),
    extragradient scales by sqrt(1 - c^2 + c^4), c = eta a, every step, from any point."""
    c = eta * a
    g = torch.Generator().manual_seed(1)
    x0, y0 = torch.randn(3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    norm0 = torch.sqrt(x0 @ x0 + y0 @ y0).item()
    expected = {"cgd": 1 / math.sqrt(1 + c**2), "eg": math.sqrt(1 - c**2 + c**4)}
    for name, make in (("cgd", lambda p: CGD(p, lr=eta, tol=1e-28, atol=1e-60)),
                       ("eg", lambda p: Extragradient(p, lr=eta))):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        opt = make(groups(x, y))
        for step in range(3):
            before = torch.sqrt(x.detach() @ x.detach() + y.detach() @ y.detach()).item()
            opt.step(zero_sum(bilinear(x, y, a)))
            after = torch.sqrt(x.detach() @ x.detach() + y.detach() @ y.detach()).item()
            assert after / before == pytest.approx(expected[name], abs=1e-6), (name, step)
    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    ox, oy = torch.optim.SGD([x], lr=eta), torch.optim.SGD([y], lr=eta)
    x.grad, y.grad = a * y0.clone(), -a * x0.clone()
    ox.step(), oy.step()
    after = torch.sqrt(x.detach() @ x.detach() + y.detach() @ y.detach()).item()
    assert after / norm0 == pytest.approx(math.sqrt(1 + c**2), abs=1e-6)


def test_cgd_per_player_step_sizes_follow_the_general_form():
    """eta_x != eta_y: dx = -eta_x (g_x + D_xy dy), dy = eta_y (g_y + D_yx dx) hold at the solution."""
    f, x0, y0 = nonlinear_game()
    for solve_for in ("min", "max"):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        opt = CGD(groups(x, y, lr_x=0.3, lr_y=0.05), tol=1e-28, atol=1e-60, solve_for=solve_for)
        opt.step(zero_sum(lambda: f(x, y)))
        dx, dy = x.detach() - x0, y.detach() - y0
        xr, yr = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        gx, gy = torch.autograd.grad(f(xr, yr), [xr, yr], create_graph=True)
        dxy_dy = torch.autograd.grad(gy, xr, grad_outputs=dy, retain_graph=True)[0]
        dyx_dx = torch.autograd.grad(gx, yr, grad_outputs=dx)[0]
        torch.testing.assert_close(dx, -0.3 * (gx.detach() + dxy_dy), atol=1e-12, rtol=0)
        torch.testing.assert_close(dy, 0.05 * (gy.detach() + dyx_dx), atol=1e-12, rtol=0)
        assert opt.stats["cg_system"] == (0.0 if solve_for == "min" else 1.0)


# ------------------------------------------------------------------------------ REFERENCE 1c table
def test_reference_table_bilinear_1000_steps():
    """f = x y from (1, 1), 1000 steps, final |(x, y)| (REFERENCE section 1c)."""
    def one():
        return (torch.ones(1, dtype=F64, requires_grad=True), torch.ones(1, dtype=F64, requires_grad=True))

    # simultaneous GDA: ~205 at 0.1, diverges at 1.0
    assert run_gda(*one(), lr=0.1, steps=1000) == pytest.approx(205, rel=0.01)
    assert run_gda(*one(), lr=1.0, steps=1000) > 1e100
    # alternating GDA: cycles (~1.4) at 0.1, exactly 1.0 at 1.0 (a cycle of period 6)
    assert run_gda(*one(), lr=0.1, steps=1000, simultaneous=False) == pytest.approx(1.4, abs=0.05)
    assert run_gda(*one(), lr=1.0, steps=1000, simultaneous=False) == pytest.approx(1.0, abs=1e-12)
    # optimistic GD: ~8.9e-3 at 0.1, diverges at 1.0
    assert run_gda(*one(), lr=0.1, steps=1000, opt_cls=OptimisticGD) == pytest.approx(8.9e-3, rel=0.02)
    div = run_gda(*one(), lr=1.0, steps=1000, opt_cls=OptimisticGD)
    assert not math.isfinite(div) or div > 1e100
    # extragradient: ~9.8e-3 at 0.1, stalls at sqrt(2) at 1.0
    eg = lambda p, lr: Extragradient(p, lr=lr)  # noqa: E731
    assert run_joint(eg, 1000, 0.1) == pytest.approx(9.8e-3, rel=0.01)
    assert run_joint(eg, 1000, 1.0) == pytest.approx(math.sqrt(2), rel=1e-9)
    # CGD: ~9.8e-3 at 0.1 and sqrt(2) 2^-500 ~ 4e-151 at 1.0. No absolute floor on CG's residual (atol=0):
    # near 1e-151 any floor stops CG before its first iteration; and abs=0 in approx, whose default
    # absolute tolerance (1e-12) would accept any number this small.
    cgd = lambda p, lr: CGD(p, lr=lr, tol=1e-28, atol=0.0)  # noqa: E731
    assert run_joint(cgd, 1000, 0.1) == pytest.approx(math.sqrt(2) * 1.01**-500, rel=1e-6, abs=0)
    assert run_joint(cgd, 1000, 1.0) == pytest.approx(math.sqrt(2) * 2.0**-500, rel=1e-6, abs=0)


def test_past_extragradient_and_optimistic_converge_on_bilinear():
    """Extrapolation from the past (one evaluation per step) converges where GDA spirals out."""
    past = lambda p, lr: Extragradient(p, lr=lr, past=True)  # noqa: E731
    assert run_joint(past, 1000, 0.1, n=3) < 0.05
    x = torch.ones(3, dtype=F64, requires_grad=True)
    y = torch.ones(3, dtype=F64, requires_grad=True)
    opt = Extragradient(groups(x, y), lr=0.1, past=True)
    calls = []
    f = bilinear(x, y, 1.0)
    for _ in range(3):
        opt.step(lambda: (calls.append(1), zero_sum(f)())[1])
    assert len(calls) == 4  # two on the first step, then one per step


# --------------------------------------------------------------------------------- products and CG
def test_mixed_products_match_finite_differences():
    f, x0, y0 = nonlinear_game()
    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    g = torch.Generator().manual_seed(3)
    vx, vy = torch.randn(5, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    val = f(x, y)
    gx, gy = torch.autograd.grad(val, [x, y], create_graph=True)
    dxy_v = mixed_vp(gy, [x], vy)             # D_xy vy
    dyx_v = mixed_vp(gx, [y], vx)             # D_yx vx
    dxx_v = mixed_vp(gx, [x], vx)             # D_xx vx

    def grad_at(xx, yy):
        xx, yy = xx.clone().requires_grad_(), yy.clone().requires_grad_()
        return torch.autograd.grad(f(xx, yy), [xx, yy])

    h = 1e-6
    fd_xy = (grad_at(x0, y0 + h * vy)[0] - grad_at(x0, y0 - h * vy)[0]) / (2 * h)
    fd_yx = (grad_at(x0 + h * vx, y0)[1] - grad_at(x0 - h * vx, y0)[1]) / (2 * h)
    fd_xx = (grad_at(x0 + h * vx, y0)[0] - grad_at(x0 - h * vx, y0)[0]) / (2 * h)
    torch.testing.assert_close(dxy_v, fd_xy, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(dyx_v, fd_yx, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(dxx_v, fd_xx, atol=1e-7, rtol=1e-7)
    # f linear in a player: products are zeros, not an error
    z = torch.ones(3, dtype=F64, requires_grad=True)
    gz = flat_grad((z * 2.0).sum(), [z], create_graph=True)
    assert torch.equal(mixed_vp(gz, [z], torch.ones(3, dtype=F64)), torch.zeros(3, dtype=F64))


def test_conjugate_gradient_reaches_tolerance_and_warm_starts():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(30, 12, generator=g, dtype=F64)
    A = torch.eye(30, dtype=F64) + M @ M.T      # the CGD system's shape: I + M M^T
    b = torch.randn(30, generator=g, dtype=F64)
    exact = torch.linalg.solve(A, b)
    for rtol in (1e-3, 1e-8, 1e-13):
        res = conjugate_gradient(lambda v: A @ v, b, rtol=rtol)
        true_residual = (torch.linalg.vector_norm(b - A @ res.x) / torch.linalg.vector_norm(b)).item()
        assert res.converged and true_residual <= rtol * 1.01 and res.residual <= rtol
        assert res.iters <= 13  # at most rank(M M^T) + 1 distinct eigenvalues
    # warm start at the solution: no iteration, one matvec for the residual b - A x0
    res = conjugate_gradient(lambda v: A @ v, b, x0=exact.clone(), rtol=1e-8)
    assert res.iters == 0 and res.matvecs == 1 and res.converged
    # warm start near the solution: fewer iterations; residual measured from b - A x0
    cold = conjugate_gradient(lambda v: A @ v, b, rtol=1e-7)
    warm = conjugate_gradient(lambda v: A @ v, b, x0=exact + 1e-5 * torch.randn(30, generator=g, dtype=F64),
                              rtol=1e-7)
    assert warm.converged and warm.iters < cold.iters
    true_residual = (torch.linalg.vector_norm(b - A @ warm.x) / torch.linalg.vector_norm(b)).item()
    assert true_residual == pytest.approx(warm.residual, rel=1e-3) and true_residual <= 1e-7
    # a warm start worse than zero is dropped
    bad = conjugate_gradient(lambda v: A @ v, b, x0=1e3 * exact, rtol=1e-10)
    assert bad.converged
    torch.testing.assert_close(bad.x, exact, atol=1e-9, rtol=0)
    # the atol floor and the iteration cap
    assert conjugate_gradient(lambda v: A @ v, b, rtol=0, atol=1e30).iters == 0
    capped = conjugate_gradient(lambda v: A @ v, b, rtol=1e-14, max_iter=2)
    assert capped.iters == 2 and not capped.converged


def test_cgd_cg_residual_is_below_tolerance():
    f, x0, y0 = nonlinear_game()
    for tol in (1e-6, 1e-12):
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        opt = CGD(groups(x, y), lr=0.2, tol=tol, atol=0.0)
        for _ in range(3):
            opt.step(zero_sum(lambda: f(x, y)))
            assert opt.stats["cg_converged"] == 1.0
            assert opt.stats["cg_residual"] ** 2 <= tol  # the authors' squared convention
            assert opt.stats["hvp"] == 1 + 2 * opt.stats["cg_iters"] + (2 if opt.state[x].get("step", 0) > 1 else 0)


# ------------------------------------------------------------------------------- ACGD closed forms
def quadratic_game(nx=6, ny=4, seed=0):
    """f = x'Px/2 + x'By - y'Qy/2 + c'x + d'y: D_xy = B exactly."""
    g = torch.Generator().manual_seed(seed)
    P, Q = torch.randn(nx, nx, generator=g, dtype=F64), torch.randn(ny, ny, generator=g, dtype=F64)
    P, Q = P @ P.T / nx, Q @ Q.T / ny
    B = torch.randn(nx, ny, generator=g, dtype=F64)
    c, d = torch.randn(nx, generator=g, dtype=F64), torch.randn(ny, generator=g, dtype=F64)
    x0, y0 = torch.randn(nx, generator=g, dtype=F64), torch.randn(ny, generator=g, dtype=F64)

    def f(x, y):
        return 0.5 * x @ P @ x + x @ B @ y - 0.5 * y @ Q @ y + c @ x + d @ y

    grads = lambda x, y: (P @ x + B @ y + c, B.T @ x - Q @ y + d)  # noqa: E731
    return f, grads, B, x0, y0


def closed_form_step(gx, gy, B, eta_x, eta_y):
    """The CGD step with diagonal step sizes, by dense solves."""
    Ex, Ey = torch.diag(eta_x), torch.diag(eta_y)
    nx, ny = len(gx), len(gy)
    dx = torch.linalg.solve(torch.eye(nx, dtype=F64) + Ex @ B @ Ey @ B.T, -Ex @ (gx + B @ (eta_y * gy)))
    dy = torch.linalg.solve(torch.eye(ny, dtype=F64) + Ey @ B.T @ Ex @ B, Ey @ (gy - B.T @ (eta_x * gx)))
    return dx, dy


@pytest.mark.parametrize("solve_for", ["min", "max", "alternate"])
def test_acgd_steps_equal_the_closed_form_preconditioned_solve(solve_for):
    f, grads, B, x0, y0 = quadratic_game()
    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    lr_x, lr_y, beta, eps = 0.02, 0.05, 0.9, 1e-3
    opt = ACGD(groups(x, y, lr_x, lr_y), beta=beta, eps=eps, tol=1e-28, atol=1e-60, solve_for=solve_for)
    vx, vy = torch.zeros_like(x0), torch.zeros_like(y0)
    xs, ys = x0.clone(), y0.clone()
    for t in range(1, 5):
        gx, gy = grads(xs, ys)
        vx, vy = beta * vx + (1 - beta) * gx**2, beta * vy + (1 - beta) * gy**2
        bc = math.sqrt(1 - beta**t)
        dx, dy = closed_form_step(gx, gy, B, lr_x * bc / (vx.sqrt() + eps), lr_y * bc / (vy.sqrt() + eps))
        xs, ys = xs + dx, ys + dy
        opt.step(zero_sum(lambda: f(x, y)))
        torch.testing.assert_close(x.detach(), xs, atol=1e-12, rtol=0)
        torch.testing.assert_close(y.detach(), ys, atol=1e-12, rtol=0)
        torch.testing.assert_close(x.grad, gx, atol=1e-12, rtol=0)
        torch.testing.assert_close(y.grad, -gy, atol=1e-12, rtol=0)  # player 1's own loss is -f


def test_acgd_with_neutral_adaptivity_is_cgd():
    """eps >> sqrt(v): eta = lr sqrt(1-beta^t) / (sqrt(v) + eps) is a constant, so ACGD's step is CGD's."""
    f, grads, B, x0, y0 = quadratic_game(seed=1)
    eta, eps, beta = 0.1, 1e12, 0.99
    x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    acgd = ACGD(groups(x, y), lr=eta * eps / math.sqrt(1 - beta), beta=beta, eps=eps, tol=1e-28, atol=1e-60)
    acgd.step(zero_sum(lambda: f(x, y)))
    xc, yc = x0.clone().requires_grad_(), y0.clone().requires_grad_()
    cgd = CGD(groups(xc, yc), lr=eta, tol=1e-28, atol=1e-60)
    cgd.step(zero_sum(lambda: f(xc, yc)))
    gx, gy = grads(x0, y0)
    dx, dy = closed_form_step(gx, gy, B, torch.full_like(gx, eta), torch.full_like(gy, eta))
    torch.testing.assert_close(xc.detach(), x0 + dx, atol=1e-12, rtol=0)
    torch.testing.assert_close(yc.detach(), y0 + dy, atol=1e-12, rtol=0)
    torch.testing.assert_close(x.detach(), xc.detach(), atol=1e-9, rtol=0)
    torch.testing.assert_close(y.detach(), yc.detach(), atol=1e-9, rtol=0)


# ------------------------------------------------------------------------- the authors' package
@pytest.fixture
def float64_default():
    # the authors' CG allocates its iterate with the default dtype
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    yield
    torch.set_default_dtype(old)


def test_acgd_and_cgd_match_the_authors_package(float64_default):
    cgds = pytest.importorskip("CGDs")
    f, x0, y0 = nonlinear_game(nx=7, ny=5, seed=2)
    cases = ((cgds.ACGD, ACGD, 6), (cgds.BCGD, CGD, 4))
    for Ref, Ours, steps in cases:
        xr, yr = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        xo, yo = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        ref = Ref(max_params=[yr], min_params=[xr], lr_max=0.05, lr_min=0.1, tol=1e-30, atol=1e-40)
        ours = Ours(groups(xo, yo, 0.1, 0.05), tol=1e-30, atol=1e-40, solve_for="alternate")
        for _ in range(steps):
            ref.step(f(xr, yr))
            ours.step(zero_sum(lambda: f(xo, yo)))
            torch.testing.assert_close(xo.detach(), xr.detach(), atol=1e-6, rtol=0)
            torch.testing.assert_close(yo.detach(), yr.detach(), atol=1e-6, rtol=0)
        assert (xo.detach() - x0).abs().max() > 1e-2  # the parameters did move


# ------------------------------------------------------------------------------------ exact resume
def _joint_case(make):
    def run(state=None, steps=3, start=None):
        f, x0, y0 = nonlinear_game(seed=4)
        x0, y0 = (x0, y0) if start is None else start
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        opt = make(groups(x, y))
        if state is not None:
            opt.load_state_dict(state)
        for _ in range(steps):
            opt.step(zero_sum(lambda: f(x, y)))
        return opt, (x.detach().clone(), y.detach().clone())
    return run


def _player_case(make):
    def run(state=None, steps=3, start=None):
        f, x0, y0 = nonlinear_game(seed=4)
        x0, y0 = (x0, y0) if start is None else start
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        ox, oy = make([x]), make([y])
        opts = {"x": ox, "y": oy}
        if state is not None:
            ox.load_state_dict(state["x"]), oy.load_state_dict(state["y"])
        for _ in range(steps):
            gx, gy = torch.autograd.grad(f(x, y), [x, y])
            x.grad, y.grad = gx, -gy
            ox.step(), oy.step()
        return _Pair(opts), (x.detach().clone(), y.detach().clone())
    return run


class _Pair:
    def __init__(self, opts):
        self.opts = opts

    def state_dict(self):
        return {k: o.state_dict() for k, o in self.opts.items()}


RESUME_CASES = {
    "cgd": _joint_case(lambda p: CGD(p, lr=0.1, solve_for="alternate")),
    "acgd": _joint_case(lambda p: ACGD(p, lr=0.05, solve_for="alternate")),
    "acgd_capped_cg": _joint_case(lambda p: ACGD(p, lr=0.05, tol=1e-6, max_iter=2)),
    "extragradient": _joint_case(lambda p: Extragradient(p, lr=0.05)),
    "past_extragradient": _joint_case(lambda p: Extragradient(p, lr=0.05, past=True)),
    "extra_adam": _joint_case(lambda p: ExtraAdam(p, lr=0.01)),
    "past_extra_adam": _joint_case(lambda p: ExtraAdam(p, lr=0.01, past=True)),
    "consensus": _joint_case(lambda p: Consensus(p, lr=0.01, gamma=1.0)),
    "consensus_sgd": _joint_case(lambda p: Consensus(p, lr=0.01, gamma=1.0, rmsprop=False)),
    "lookahead_extra_adam": _joint_case(lambda p: Lookahead(ExtraAdam(p, lr=0.01), k=2, alpha=0.5)),
    "lookahead_acgd": _joint_case(lambda p: Lookahead(ACGD(p, lr=0.05), k=3, alpha=0.3)),
    "optimistic_gd": _player_case(lambda p: OptimisticGD(p, lr=0.05)),
    "optimistic_adam": _player_case(lambda p: OptimisticAdam(p, lr=0.01)),
    "lookahead_adam": _player_case(lambda p: Lookahead(torch.optim.Adam(p, lr=0.01), k=2)),
}


@pytest.mark.parametrize("name", sorted(RESUME_CASES))
def test_state_dict_round_trip_resumes_bitwise(name):
    run = RESUME_CASES[name]
    _, straight = run(steps=7)
    opt, mid = run(steps=3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=False)
    _, resumed = run(state=state, steps=4, start=mid)
    assert torch.equal(resumed[0], straight[0]) and torch.equal(resumed[1], straight[1])


# ------------------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("cls", [CGD, ACGD])
def test_mixed_precision_is_refused(cls):
    x = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    y = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    with pytest.raises(RuntimeError, match="mixed precision"):
        cls(groups(x, y), lr=0.1).step(zero_sum(bilinear(x, y, 1.0)))
    x = torch.ones(3, requires_grad=True)
    y = torch.ones(3, requires_grad=True)
    opt = cls(groups(x, y), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(RuntimeError, match="mixed precision"):
        opt.step(zero_sum(lambda: (torch.outer(x, y) @ torch.ones(3)).sum()))
    assert torch.equal(x.detach(), torch.ones(3))  # nothing was applied
    with pytest.raises(RuntimeError, match="closure"):
        opt.step(None)


def test_float32_cgd_and_acgd_work():
    x = torch.ones(4, requires_grad=True)
    y = torch.ones(4, requires_grad=True)
    for cls in (CGD, ACGD):
        cls(groups(x, y), lr=0.1).step(zero_sum(bilinear(x, y, 1.0)))
    assert x.dtype == torch.float32 and bool((x.detach() < 1).all())


# ---------------------------------------------------------------------------------------- lookahead
def test_lookahead_semantics_param_groups_and_scheduler():
    w = torch.zeros(2, requires_grad=True)
    inner = torch.optim.SGD([w], lr=1.0)
    la = Lookahead(inner, k=3, alpha=0.5)
    assert isinstance(la, torch.optim.Optimizer) and la.param_groups is inner.param_groups
    for i in range(3):
        w.grad = -torch.ones(2)    # each fast step adds 1
        la.step()
    # fast = 3, slow = 0 -> slow = 0 + 0.5 (3 - 0) = 1.5 and fast <- slow
    assert torch.equal(w.detach(), torch.full((2,), 1.5))
    sched = torch.optim.lr_scheduler.StepLR(la, step_size=1, gamma=0.1)
    w.grad = -torch.ones(2)
    la.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1)
    la.param_groups[0]["lr"] = 0.5
    assert inner.param_groups[0]["lr"] == 0.5
    # after a load the groups are shared again
    la.load_state_dict(copy.deepcopy(la.state_dict()))
    assert la.param_groups is la.optimizer.param_groups and la.counter == 4


def test_lookahead_forwards_joint_game_optimizers():
    x = torch.ones(2, dtype=F64, requires_grad=True)
    y = torch.ones(2, dtype=F64, requires_grad=True)
    la = Lookahead(ACGD(groups(x, y), lr=0.1), k=5)
    assert la.requires_zero_sum and la.players == ["x", "y"]
    la.step(zero_sum(bilinear(x, y, 1.0)))
    assert "cg_iters" in la.stats


# ------------------------------------------------------------------------------------------ presets
GAME_PRESETS = ["cgd", "acgd", "extragradient", "extra_adam", "past_extra_adam", "optimistic_adam", "consensus",
                "lookahead_adam", "lookahead_extra_adam"]


@pytest.mark.parametrize("preset", GAME_PRESETS)
def test_presets_build_and_step_a_game(preset):
    from src.train import build_model
    from tests.helpers import compose

    cfg = compose(["experiment=bilinear", f"optimizer={preset}", "model.dim=3"])
    model = build_model(cfg)
    plan = model.plan_optimizers()
    opt = plan.optimizers.get(JOINT) or plan.optimizers["x"]
    assert (CONF / "optimizer" / f"{preset}.yaml").read_text().startswith("#")  # a header citing the paper
    if preset.startswith("lookahead"):
        assert isinstance(opt, Lookahead) and (opt.k, opt.alpha) == (5, 0.5)
    if preset == "past_extra_adam":
        assert opt.param_groups[0]["past"] is True
    if plan.joint:
        before = model.distance_to_equilibrium()
        opt.step(zero_sum(model.f))
        assert model.distance_to_equilibrium() != before
    assert cfg.optimizer.lr == 0.1  # the experiment's lr wins over the preset's


def test_acgd_preset_defaults_follow_the_paper():
    o = OmegaConf.load(CONF / "optimizer" / "acgd.yaml")
    assert (o.lr, o.beta, o.eps, o.tol, o.atol, o.warm_start) == (1e-4, 0.99, 1e-5, 1e-10, 1e-16, True)
    assert issubclass(ACGD, GameOptimizer) and ACGD.requires_zero_sum


# ------------------------------------------------------------------------------------ DDP averaging
DDP_GAME = r"""
import torch
from src.optim.acgd import ACGD
from src.optim.consensus import Consensus
from src.optim.extragradient import ExtraAdam


def run_game(rank, world):
    # f = mean over 8 samples (a_i, b_i) of tanh(a_i.x) (b_i.y) + x'Cy; each process holds 8/world samples
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 4, generator=g, dtype=torch.float64)
    C = torch.randn(5, 4, generator=g, dtype=torch.float64)
    x0, y0 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    a, b = a[rank::world], b[rank::world]
    out = {}
    makers = {"acgd": lambda p: ACGD(p, lr=0.05, tol=1e-28, atol=1e-60),
              "consensus": lambda p: Consensus(p, lr=0.01, gamma=1.0),
              "extra_adam": lambda p: ExtraAdam(p, lr=0.01)}
    for name, make in makers.items():
        x, y = x0.clone().requires_grad_(), y0.clone().requires_grad_()
        opt = make([{"params": [x], "player": "x"}, {"params": [y], "player": "y"}])

        def closure():
            f = (torch.tanh(a @ x) * (b @ y)).mean() + x @ C @ y
            return f, -f

        for _ in range(3):
            opt.step(closure)
        out[name] = (x.detach().clone(), y.detach().clone())
    return out
"""

DDP_WORKER = r"""
import os, sys
import torch
import torch.distributed as dist
sys.path.insert(0, sys.argv[1])
rank, world, port, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
dist.init_process_group("gloo", rank=rank, world_size=world)
namespace = {}
exec(open(sys.argv[6]).read(), namespace)
torch.save(namespace["run_game"](rank, world), out)
dist.destroy_process_group()
"""


def test_ddp_averaging_equals_one_process_on_the_whole_batch(tmp_path):
    """Two gloo processes, each with half the samples, take the same steps as one process with all of
    them: gradients and Hessian-vector products are averaged over the process group."""
    import socket
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "game.py").write_text(DDP_GAME)
    (tmp_path / "worker.py").write_text(DDP_WORKER)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(root), str(r), "2", port,
                               str(tmp_path / f"out{r}.pt"), str(tmp_path / "game.py")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out.decode()[-3000:]
    namespace: dict = {}
    exec(DDP_GAME, namespace)
    single = namespace["run_game"](0, 1)
    results = [torch.load(tmp_path / f"out{r}.pt") for r in range(2)]
    for name, (x, y) in single.items():
        for res in results:
            torch.testing.assert_close(res[name][0], x, atol=1e-12, rtol=0)
            torch.testing.assert_close(res[name][1], y, atol=1e-12, rtol=0)
        assert torch.equal(results[0][name][0], results[1][name][0])  # every process holds the same weights


# ------------------------------------------------------------------------------------- GAN wiring
# A small MLP GAN on ring8 (the DCGAN-on-digits path is the same code; it is exercised by
# benchmarks/acgd_cost.py and by `python -m src.run optimizer=acgd model.loss=wgan`).
SMALL_GAN = ["logger=csv", "model=gan_mlp", "dataset=ring8", "model.generator.hidden=[32,32]",
             "model.discriminator.hidden=[32,32]", "dataset.num_train=1024", "dataset.num_val=256",
             "dataset.val_batch_size=256", "model.num_eval_samples=256", "trainer.max_epochs=1",
             "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1"]


@pytest.mark.slow
def test_acgd_trains_a_wgan_and_logs_cg_stats(cli):
    import csv

    result = cli("optimizer=acgd", "model.loss=wgan", *SMALL_GAN)
    assert result.returncode == 0, result.output[-3000:]
    rows = list(csv.DictReader(open(result.run_dir / "csv" / "metrics.csv")))
    logged = [r for r in rows if r.get("optim/cg_iters")]
    assert len(logged) == 3
    for key in ("optim/hvp", "optim/cg_residual", "optim/step_norm/generator", "optim/step_norm/discriminator",
                "optim/eta_mean/generator", "grad_norm/discriminator"):
        assert all(r[key] != "" for r in logged), key
    assert all(float(r["optim/cg_residual"]) ** 2 <= 1e-10 for r in logged)


def test_acgd_with_a_non_zero_sum_loss_fails_early_and_clearly(cli):
    result = cli("optimizer=acgd", *SMALL_GAN)  # the default loss is the non-saturating one
    assert result.returncode == 2
    assert "zero-sum" in result.stderr and "loss=wgan" in result.stderr and "Traceback" not in result.stderr


def test_a_non_finite_cgd_step_is_not_applied():
    from src.utils.errors import DivergenceError

    for cls in (CGD, ACGD):
        x = torch.ones(2, dtype=F64, requires_grad=True)
        y = torch.ones(2, dtype=F64, requires_grad=True)
        opt = cls(groups(x, y), lr=0.1, solve_for="alternate")
        with pytest.raises(DivergenceError, match="not applied"):
            opt.step(zero_sum(lambda: 1e200 * (x**2 @ y**2) * 1e200 * (x @ y)))
        assert torch.equal(x.detach(), torch.ones(2, dtype=F64))
        assert not any(opt.state_dict()["state"].values())  # no moment, warm start or counter was updated


def test_extragradient_leaves_the_parameters_at_w_when_the_extrapolated_loss_fails():
    x = torch.ones(2, dtype=F64, requires_grad=True)
    y = torch.ones(2, dtype=F64, requires_grad=True)
    opt = Extragradient(groups(x, y), lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("non-finite loss at w_half")
        return zero_sum(bilinear(x, y, 1.0))()

    with pytest.raises(FloatingPointError):
        opt.step(closure)
    assert torch.equal(x.detach(), torch.ones(2, dtype=F64)) and torch.equal(y.detach(), torch.ones(2, dtype=F64))
