"""NCG (Naganuma & Iiduka, AISTATS 2023) and NCGAdam (CoBA, Kobayashi & Iiduka): textbook CG behaviour with an
exact line search, hand-checked steps for every beta rule and scope, schedules, exact resume, configs."""
from __future__ import annotations

import copy
import io
import pickle
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from src.optim.factory import OptimizerGroup
from src.optim.ncg import BETA_RULES, NCG
from src.optim.ncg_adam import NCGAdam
from src.utils.errors import ConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"
F64 = torch.float64


# ----------------------------------------------------------------------------------------- helpers
def spd(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), dtype=F64, generator=g))
    return q @ torch.diag(eigenvalues.to(F64)) @ q.T


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def exact_line_search(A: torch.Tensor, as_tensor: bool = False):
    """alpha = argmin_t f(x + t d) = -g.d / d.A d for f = 0.5 x'Ax - b'x."""

    def search(params, grads, directions, lr):
        g, d = flat(grads), flat(directions)
        alpha = -(g @ d) / (d @ A @ d)
        return alpha if as_tensor else float(alpha)

    return search


SCALARS = pytest.mark.parametrize("host", [True, False], ids=["float-scalars", "tensor-scalars"])


def solve_quadratic(A, b, steps, rule, as_tensor=False, host=True):
    """Minimise 0.5 x'Ax - b'x over x split into two parameter tensors (a global beta spans both)."""
    n = len(b)
    x1 = torch.zeros(n // 2, dtype=F64, requires_grad=True)
    x2 = torch.zeros(n - n // 2, dtype=F64, requires_grad=True)
    opt = NCG([x1, x2], lr=1.0, beta_rule=rule, c=1.0, cap=None, beta_scope="global",
              line_search=exact_line_search(A, as_tensor))
    opt.host_scalars = host  # False: the accelerator code path (0-dim tensors), run on the CPU
    for _ in range(steps):
        opt.zero_grad()
        x = torch.cat([x1, x2])
        (0.5 * x @ A @ x - b @ x).backward()
        opt.step()
    return torch.cat([x1, x2]).detach()


# ----------------------------------------------------------------------- textbook CG (exact search)
@SCALARS
@pytest.mark.parametrize("rule", BETA_RULES)
def test_exact_line_search_terminates_in_n_steps(rule, host):
    n = 12
    A = spd(torch.linspace(1.0, 20.0, n))
    b = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(1))
    x_star = torch.linalg.solve(A, b)
    x = solve_quadratic(A, b, n, rule, host=host)
    assert (x - x_star).norm() / x_star.norm() < 1e-10
    # ... and not much earlier: CG is not simply converging fast here.
    x_early = solve_quadratic(A, b, n - 3, rule, host=host)
    assert (x_early - x_star).norm() / x_star.norm() > 1e-6


@pytest.mark.parametrize("rule", BETA_RULES)
def test_exact_line_search_three_distinct_eigenvalues_three_steps(rule):
    eig = torch.tensor([1.0] * 7 + [4.0] * 6 + [9.0] * 7)
    A = spd(eig, seed=2)
    b = torch.randn(len(eig), dtype=F64, generator=torch.Generator().manual_seed(3))
    x_star = torch.linalg.solve(A, b)
    x = solve_quadratic(A, b, 3, rule, as_tensor=True)  # the hook may return a tensor, too
    assert (x - x_star).norm() / x_star.norm() < 1e-10


# ------------------------------------------------------------------------------ one step by hand
def hand_beta(rule, g, gp, dp, mu=2.0):
    """Direct formulas of REFERENCE 1a on vectors (independent of conjugate_beta's algebra)."""
    y = g - gp
    fr = (g @ g) / (gp @ gp)
    prp = (g @ y) / (gp @ gp)
    hs = (g @ y) / (dp @ y)
    dy = (g @ g) / (dp @ y)
    return {
        "FR": fr, "PRP": prp, "HS": hs, "DY": dy,
        "HS_DY": max(0.0, min(hs, dy)), "FR_PRP": max(0.0, min(fr, prp)),
        "HZ": hs - mu * (y @ y) * (g @ dp) / (dp @ y) ** 2,
    }[rule]


def two_params(dtype=F64):
    g = torch.Generator().manual_seed(4)
    return [torch.randn(3, 4, dtype=dtype, generator=g).requires_grad_(),
            torch.randn(5, dtype=dtype, generator=g).requires_grad_()]


def fixed_grads(seed, like, base=None):
    g = torch.Generator().manual_seed(seed)
    noise = [torch.randn(p.shape, dtype=p.dtype, generator=g) for p in like]
    return noise if base is None else [0.5 * b + 0.3 * e for b, e in zip(base, noise)]


def hand_ncg(rule, grad_seq, c, cap, scope):
    """The textbook recursion on vectors: one unit (all parameters) or one per tensor. Returns per step
    the directions (per tensor, flattened) and the betas (averaged over units)."""
    units = [list(range(len(grad_seq[0])))] if scope == "global" else [[i] for i in range(len(grad_seq[0]))]
    prev = {}
    out = []
    for step, grads in enumerate(grad_seq):
        dirs, betas = [None] * len(grads), []
        for unit in units:
            g = torch.cat([grads[i].reshape(-1) for i in unit])
            if step == 0:
                d, beta = -g, 0.0
            else:
                gp, dp = prev[tuple(unit)]
                beta = float(hand_beta(rule, g, gp, dp))
                d = -g + c * min(beta, cap) * dp  # gamma applied once
            prev[tuple(unit)] = (g, d)
            betas.append(beta)
            for i, piece in zip(unit, d.split([grads[i].numel() for i in unit])):
                dirs[i] = piece
        out.append((dirs, sum(betas) / len(betas)))
    return out


@SCALARS
@pytest.mark.parametrize("scope", ["global", "tensor"])
@pytest.mark.parametrize("rule", BETA_RULES)
def test_steps_match_hand_computation(rule, scope, host):
    """d_0 = -g_0, then d_n = -g_n + c min(beta_n, cap) d_{n-1} with beta_n from the direct formulas, for four
    steps (the later ones read the inner products the optimizer stored), and the logged statistics."""
    params = two_params()
    p0 = [p.detach().clone() for p in params]
    lr, c, cap = 0.1, 0.75, 0.5
    opt = NCG(params, lr=lr, beta_rule=rule, c=c, cap=cap, beta_scope=scope)
    opt.host_scalars = host
    grad_seq = [fixed_grads(5, params)]
    for seed in (6, 7, 8):  # each correlated with the last: betas of both signs, some below the cap
        grad_seq.append(fixed_grads(seed, params, base=grad_seq[-1]))
    expected = hand_ncg(rule, grad_seq, c, cap, scope)
    position = [a.clone() for a in p0]
    for step, (grads, (dirs, beta)) in enumerate(zip(grad_seq, expected)):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        position = [x + lr * d.view_as(x) for x, d in zip(position, dirs)]
        for p, x in zip(params, position):
            torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-13)
        d, g = flat(dirs), flat(grads)
        assert float(opt.stats["beta"]) == pytest.approx(beta, rel=1e-10, abs=1e-14)
        assert float(opt.stats["cos_dir_neg_grad"]) == pytest.approx(float(-(d @ g) / (d.norm() * g.norm())), rel=1e-10)
        assert float(opt.stats["step_norm"]) == pytest.approx(float(lr * d.norm()), rel=1e-10)
        if step == 0:  # the first step moves along -g
            assert float(opt.stats["cos_dir_neg_grad"]) == pytest.approx(1.0, abs=1e-12)


def test_previous_gradient_is_a_copy_not_a_reference():
    """The next backward accumulates into the same .grad tensor in place: y = g_n - g_{n-1} must not be 0."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1).double()
    opt = NCG(model.parameters(), lr=0.1, beta_rule="PRP", cap=None)
    x = torch.randn(8, 4, dtype=F64)
    model(x).pow(2).mean().backward()
    g1 = [p.grad.clone() for p in model.parameters()]
    grad_tensors = [p.grad for p in model.parameters()]
    opt.step()
    opt.zero_grad(set_to_none=False)  # zeroes the same tensors in place
    model(x).pow(2).mean().backward()
    assert all(p.grad is t for p, t in zip(model.parameters(), grad_tensors))
    g2 = [p.grad.clone() for p in model.parameters()]
    for p, a in zip(model.parameters(), g1):
        torch.testing.assert_close(opt.state[p]["prev_grad"], a, rtol=0, atol=0)
    opt.step()
    y = flat(g2) - flat(g1)
    assert y.norm() > 1e-3
    assert float(opt.stats["beta"]) == pytest.approx(float(flat(g2) @ y / (flat(g1) @ flat(g1))), rel=1e-12)


def test_floor_bounds_negative_beta():
    params = two_params()
    opt = NCG(params, lr=0.1, beta_rule="HS", cap=0.5, floor=-0.25)
    g1 = fixed_grads(5, params)
    for grads in (g1, [0.9 * g for g in g1]):  # HS = g2.y / d1.y = (0.81 - 0.9) / (1 - 0.9) = -0.9
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
    assert float(opt.stats["beta"]) == pytest.approx(-0.9) and float(opt.stats["gamma"]) == -0.25
    with pytest.raises(ValueError, match="floor"):
        NCG(params, floor=0.1)


def test_step_with_closure_returns_the_loss():
    x = torch.ones(3, dtype=F64, requires_grad=True)
    opt = NCG([x], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 3.0
    torch.testing.assert_close(x.detach(), torch.full((3,), 0.8, dtype=F64))


def test_several_param_groups_get_their_own_beta_and_stats():
    a = torch.zeros(2, dtype=F64, requires_grad=True)
    b = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = NCG([{"params": [a], "group": "head", "lr": 0.2}, {"params": [b]}], lr=0.1, cap=None)
    for scale in (1.0, 0.5):
        a.grad, b.grad = torch.full((2,), scale, dtype=F64), torch.full((3,), 2 * scale, dtype=F64)
        opt.step()
    assert {k for k in opt.stats if k.startswith("beta")} == {"beta/head", "beta/1"}
    assert opt.stats["beta/head"] == pytest.approx(0.25) and opt.stats["lr/head"] == 0.2
    torch.testing.assert_close(a.detach(), torch.full((2,), -0.2 - 0.2 * (0.5 + 0.25), dtype=F64))


def test_zero_denominator_gives_beta_zero():
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    for rule in BETA_RULES:
        opt = NCG([p], lr=0.1, beta_rule=rule, cap=None)
        p.grad = torch.zeros(3, dtype=F64)  # |g_0|^2 = 0 and d_0 = 0: every denominator vanishes
        opt.step()
        p.grad = torch.ones(3, dtype=F64)
        opt.step()
        assert float(opt.stats["beta"]) == 0.0, rule
        assert torch.isfinite(p).all()


def test_params_without_gradient_are_skipped_and_restart_the_direction():
    a = torch.zeros(2, dtype=F64, requires_grad=True)
    b = torch.zeros(2, dtype=F64, requires_grad=True)
    opt = NCG([a, b], lr=0.5, cap=None)
    a.grad = torch.ones(2, dtype=F64)
    opt.step()
    assert torch.equal(b, torch.zeros(2, dtype=F64)) and opt.state[b] == {}
    a.grad, b.grad = torch.ones(2, dtype=F64), torch.ones(2, dtype=F64)
    opt.step()  # b's first gradient: the group restarts along -g
    assert float(opt.stats["beta"]) == 0.0
    torch.testing.assert_close(a.detach(), torch.full((2,), -1.0, dtype=F64))
    opt.step()
    assert float(opt.stats["beta"]) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------- schedules
SCHEDULES = {  # the step-size schedules of Naganuma & Iiduka's sweeps, as the group's scheduler
    "constant": (None, lambda n: 0.2),
    "inv_sqrt": ({"_target_": "src.optim.schedules.PowerDecay", "power": 0.5}, lambda n: 0.2 / math.sqrt(n + 1)),
    "power": ({"_target_": "src.optim.schedules.PowerDecay", "power": 0.75}, lambda n: 0.2 * (n + 1) ** -0.75),
    "exponential": ({"_target_": "torch.optim.lr_scheduler.ExponentialLR", "gamma": 0.9}, lambda n: 0.2 * 0.9**n),
    "step": ({"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 3, "gamma": 0.5},
             lambda n: 0.2 * 0.5 ** (n // 3)),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_schedule_gives_documented_lr_sequence(schedule):
    """NCG's step size follows the optimizer group's scheduler, stepped once per iteration."""
    spec, expected = SCHEDULES[schedule]
    holder = nn.Module()
    holder.x = nn.Parameter(torch.ones(4, dtype=F64))
    plan = OptimizerGroup({"_target_": "src.optim.ncg.NCG", "lr": 0.2, "scheduler": spec}).build({"p": holder})
    opt = plan.optimizers["p"]
    seen = []

    def record(params, grads, directions, lr):
        seen.append((lr, [d.clone() for d in directions]))
        return lr

    opt.line_search = record
    x = holder.x
    for n in range(8):
        before = x.detach().clone()
        opt.zero_grad()
        (x**2).sum().backward()
        opt.step()
        plan.step_schedulers()
        lr, (d,) = seen[-1]
        assert lr == pytest.approx(expected(n), rel=1e-12)
        assert opt.stats["lr"] == lr
        torch.testing.assert_close(x.detach(), before + lr * d, rtol=0, atol=1e-15)


def test_ncg_has_no_schedule_of_its_own():
    with pytest.raises(TypeError):
        NCG([torch.zeros(1, requires_grad=True)], schedule="exponential")


# ------------------------------------------------------------------------------------- exact resume
def mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def train(model, opt, batches):
    for x, y in batches:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


OPTIMIZERS = {
    "ncg_global_hz": lambda p: NCG(p, lr=0.05, beta_rule="HZ", weight_decay=1e-3),
    "ncg_tensor_prp": lambda p: NCG(p, lr=0.05, beta_rule="PRP", beta_scope="tensor", c=0.75),
    "ncg_adam": lambda p: NCGAdam(p, lr=1e-2, M=0.5, weight_decay=1e-3),
}


@SCALARS
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_round_trip_continues_bitwise(name, host):
    def make(params):
        opt = OPTIMIZERS[name](params)
        opt.host_scalars = host
        return opt

    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)) for _ in range(7)]
    k = 3
    straight = mlp(0)
    opt = make(straight.parameters())
    train(straight, opt, batches)
    reference_stats = {key: torch.as_tensor(v).clone() for key, v in opt.stats.items()}

    first = mlp(0)
    opt1 = make(first.parameters())
    train(first, opt1, batches[:k])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    resumed = mlp(1)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt2 = make(resumed.parameters())
    opt2.load_state_dict(saved["opt"])
    train(resumed, opt2, batches[k:])
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    for key, value in reference_stats.items():
        assert torch.equal(torch.as_tensor(opt2.stats[key]), value), key


def test_state_moved_like_lightning_optimizer_to_device():
    """Lightning moves optimizer state by replacing each parameter's state dict with moved copies."""
    g = torch.Generator().manual_seed(14)
    batches = [(torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)) for _ in range(5)]
    ref, moved = mlp(0), mlp(0)
    opt_ref, opt = NCGAdam(ref.parameters(), M=0.5), NCGAdam(moved.parameters(), M=0.5)
    train(ref, opt_ref, batches)
    train(moved, opt, batches[:2])
    for p in list(opt.state):
        opt.state[p] = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}
    train(moved, opt, batches[2:])
    for a, b in zip(ref.parameters(), moved.parameters()):
        assert torch.equal(a, b)
        for key in ("prev_grad", "prev_dir", "exp_avg", "exp_avg_sq"):  # the state is live, not stale copies
            assert torch.equal(opt_ref.state[a][key], opt.state[b][key]), key


def test_deepcopy_and_pickle_continue_identically():
    g = torch.Generator().manual_seed(13)
    batches = [(torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)) for _ in range(5)]
    model = mlp(0)
    opt = NCG(model.parameters(), lr=0.05, beta_rule="PRP")
    train(model, opt, batches[:2])
    twin = copy.deepcopy({"model": model, "opt": opt})  # one memo: the copy's state refers to the copy's params
    pickled = pickle.loads(pickle.dumps({"model": model, "opt": opt}))
    train(model, opt, batches[2:])
    for other in (twin, pickled):
        train(other["model"], other["opt"], batches[2:])
        for a, b in zip(model.parameters(), other["model"].parameters()):
            assert torch.equal(a, b)


@pytest.mark.parametrize("scope", ["global", "tensor"])
def test_resume_across_scalar_modes(scope):
    """A checkpoint written on the CPU (float scalars) resumes on an accelerator (tensor scalars) and back."""
    g = torch.Generator().manual_seed(11)
    batches = [(torch.randn(32, 6, generator=g), torch.randn(32, 1, generator=g)) for _ in range(6)]
    ref, mixed = mlp(0), mlp(0)
    opt_ref = NCG(ref.parameters(), lr=0.05, beta_rule="FR_PRP", beta_scope=scope)
    opt_mixed = NCG(mixed.parameters(), lr=0.05, beta_rule="FR_PRP", beta_scope=scope)
    train(ref, opt_ref, batches)
    for i, host in enumerate([True, False, True]):
        opt_mixed.host_scalars = host
        train(mixed, opt_mixed, batches[2 * i:2 * i + 2])
        assert float(opt_mixed.stats["beta"]) != 0.0 or i == 0  # no restart at the switch
    for a, b in zip(ref.parameters(), mixed.parameters()):  # beta in float64 vs float32 arithmetic
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ NCGAdam
@SCALARS
def test_ncg_adam_two_steps_by_hand(host):
    params = two_params()
    p0 = [p.detach().clone() for p in params]
    lr, (b1, b2), eps, M, a = 0.01, (0.9, 0.999), 1e-8, 0.5, 1.0 + 1e-8
    opt = NCGAdam(params, lr=lr, betas=(b1, b2), eps=eps, M=M, a=a)  # HS, gamma = beta
    opt.host_scalars = host
    g1 = flat(fixed_grads(5, params))
    g2 = flat(fixed_grads(6, params, base=fixed_grads(5, params)))
    x = flat(p0)
    # t = 1
    d1 = -g1
    m, v = (1 - b1) * d1, (1 - b2) * g1**2
    x = x + lr * (m / (1 - b1)) / ((v / (1 - b2)).sqrt() + eps)
    # t = 2
    y = g2 - g1
    hs = (g2 @ y) / (d1 @ y)
    d2 = -g2 + M / 2**a * hs * d1
    m, v = b1 * m + (1 - b1) * d2, b2 * v + (1 - b2) * g2**2
    x = x + lr * (m / (1 - b1**2)) / ((v / (1 - b2**2)).sqrt() + eps)
    for grads in (g1, g2):
        for p, g in zip(params, grads.split([p.numel() for p in params])):
            p.grad = g.view_as(p).clone()
        opt.step()
    torch.testing.assert_close(flat(params).detach(), x, rtol=0, atol=1e-14)
    assert float(opt.stats["beta"]) == pytest.approx(float(hs), rel=1e-12)
    assert float(opt.stats["gamma"]) == pytest.approx(float(M / 2**a * hs), rel=1e-12)


def test_ncg_adam_with_m_zero_is_adam():
    a, b = mlp(0), mlp(0)
    ours, adam = NCGAdam(a.parameters(), lr=1e-2, M=0.0), torch.optim.Adam(b.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(8)
    batches = [(torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)) for _ in range(5)]
    train(a, ours, batches)
    train(b, adam, batches)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_ncg_adam_converges_on_a_quadratic():
    n = 10
    A = spd(torch.linspace(1.0, 10.0, n), seed=9)
    b = torch.randn(n, dtype=F64, generator=torch.Generator().manual_seed(10))
    x_star = torch.linalg.solve(A, b)
    x = torch.zeros(n, dtype=F64, requires_grad=True)
    opt = NCGAdam([x], lr=0.05, M=1.0)  # a large M keeps the conjugate term visible for a while
    for _ in range(600):
        opt.zero_grad()
        (0.5 * x @ A @ x - b @ x).backward()
        opt.step()
    assert (x.detach() - x_star).norm() / x_star.norm() < 1e-3


# ------------------------------------------------------------------------------------------ configs
MINE = ["sgd", "momentum", "adamw", "rmsprop", "ncg", "ncg_adam"]


def players():
    torch.manual_seed(0)
    return {"generator": nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2)),
            "discriminator": nn.Sequential(nn.Linear(2, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))}


@pytest.mark.parametrize("name", MINE)
def test_config_builds_per_player_optimizers_that_step(name):
    cfg = OmegaConf.load(CONF / "optimizer" / f"{name}.yaml")
    assert cfg._target_ and "optimizer" not in cfg  # the optimizer's settings at the top of the group
    nets = players()
    cfg.players = {"discriminator": {"lr": 3e-3}}
    plan = OptimizerGroup(cfg).build(nets)
    assert not plan.joint and set(plan.optimizers) == set(nets)
    assert plan.optimizers["discriminator"].param_groups[0]["lr"] == 3e-3
    assert plan.optimizers["generator"].param_groups[0]["lr"] == cfg.lr
    for player, net in nets.items():
        before = [p.detach().clone() for p in net.parameters()]
        for _ in range(2):
            plan.optimizers[player].zero_grad()
            net(torch.randn(4, 2)).pow(2).mean().backward()
            plan.optimizers[player].step()
        assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_config_composes_through_hydra():
    from tests.helpers import compose

    for name, cls in (("ncg", NCG), ("ncg_adam", NCGAdam)):
        cfg = compose([f"optimizer={name}", "optimizer.beta_scope=tensor"])
        plan = OptimizerGroup(cfg.optimizer).build(players())
        assert all(type(o) is cls and o.param_groups[0]["beta_scope"] == "tensor" for o in plan.optimizers.values())


def test_bad_option_is_a_config_error():
    cfg = OmegaConf.load(CONF / "optimizer" / "ncg.yaml")
    cfg.beta_rule = "XYZ"
    with pytest.raises(ConfigError, match="beta_rule"):
        OptimizerGroup(cfg).build(players())
    cfg.beta_rule = "fr"  # case-insensitive
    assert OptimizerGroup(cfg).build(players()).optimizers["generator"].param_groups[0]["beta_rule"] == "FR"
