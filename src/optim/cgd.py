"""Competitive gradient descent (Schaefer & Anandkumar, "Competitive Gradient Descent", NeurIPS 2019).

Zero-sum game: player 0 (x) minimises f, player 1 (y) maximises f; the closure returns ``(f, -f)``
and only ``losses[0]`` is read. Each step is the Nash equilibrium of the local bilinear game with
quadratic regularisation (per-player step sizes eta_x, eta_y; scalars here, per-coordinate diagonal
matrices in ACGD)::

    x player:  min_dx  dx.g_x + dx.D_xy dy + dx.eta_x^-1 dx / 2
    y player:  max_dy  dy.g_y + dx.D_xy dy - dy.eta_y^-1 dy / 2

with g = grad f and D_xy = d^2 f / dx dy (D_yx = D_xy^T). Its first-order conditions are

    dx = -eta_x (g_x + D_xy dy),        dy = eta_y (g_y + D_yx dx).                       (1)

Substituting one into the other gives one player's step from a linear system:

    (I + eta_x D_xy eta_y D_yx) dx = -eta_x (g_x + D_xy eta_y g_y)
    (I + eta_y D_yx eta_x D_xy) dy =  eta_y (g_y - D_yx eta_x g_x)

(for eta_x = eta_y = eta these are the paper's dx = -eta (I + eta^2 D_xy D_yx)^-1 (g_x + eta D_xy g_y)
and dy = eta (I + eta^2 D_yx D_xy)^-1 (g_y - eta D_yx g_x)). With S = eta^(1/2) and dx = S_x u the x
system becomes symmetric positive definite,

    (I + M M^T) u = -S_x (g_x + D_xy eta_y g_y),   M = S_x D_xy S_y,

so it is solved by conjugate gradients using only mixed products D v (double backward; no matrix is
formed). The other player's step then follows in closed form from (1): dy = eta_y (g_y + D_yx dx).
The product D_yx dx it needs is not recomputed: every CG matvec computes h = D_yx S_x p on its way,
and since u = u0 + sum_k alpha_k p_k, D_yx dx = sum_k alpha_k h_k (+ the warm start's h). The
symmetric path (solve the y system, recover dx = -eta_x (g_x + D_xy dy)) is used when the y player is
smaller (``solve_for="auto"``) or on request.

Cost per step: one create_graph gradient of f w.r.t. both players, one product for the right-hand
side, two per CG iteration and two for a warm start's initial residual (the authors' package needs
about 5 + 2k). CG stops when ``|r|^2 <= max(tol |b|^2, atol)`` -- the authors' convention, so the
paper's ``tol=1e-10, atol=1e-16`` mean a residual norm of 1e-5 |b| (or 1e-8).

Gradients and products are averaged over processes when torch.distributed is initialised (see
src/optim/hvp.py), so DDP needs no reducer hooks. Each player's own-loss gradient is written into
``.grad`` (player 1's own loss is -f: its ``.grad`` is -grad_y f). Float32/float64 only.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from src.optim.base import GameOptimizer, distributed_mean_
from src.optim.hvp import (add_flat_, check_full_precision, conjugate_gradient, flatten, mixed_vp,
                           write_grads)
from src.utils.errors import DivergenceError

SOLVE_FOR = ("auto", "min", "max", "alternate")


class CGD(GameOptimizer):
    """Competitive gradient descent. Param groups: (minimiser, maximiser), each with a ``player`` name
    and its own ``lr`` (eta). Options:

    * ``tol``, ``atol``: CG stops when |r|^2 <= max(tol |b|^2, atol) (squared, as in the authors' code);
    * ``max_iter``: CG iterations per step (None: the system's dimension, CG's finite-termination bound);
    * ``warm_start``: start CG from the previous step's (scaled) solution;
    * ``solve_for``: which player's system CG solves: ``auto`` (the smaller player), ``min``, ``max``,
      or ``alternate`` (max first, then alternating, as the authors' package does).

    ``stats`` after a step: cg_iters, hvp (mixed products), cg_residual (|r|/|b|), cg_converged,
    cg_system (0: min player's system, 1: max player's), step_norm/<player>.
    """

    requires_zero_sum = True

    def __init__(self, params, lr: float = 1e-4, tol: float = 1e-10, atol: float = 1e-16,
                 max_iter: int | None = None, warm_start: bool = True, solve_for: str = "auto"):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not (tol >= 0 and atol >= 0):
            raise ValueError(f"tol and atol must be >= 0, got {tol}, {atol}")
        if max_iter is not None and int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1 or None, got {max_iter}")
        if solve_for not in SOLVE_FOR:
            raise ValueError(f"solve_for must be one of {SOLVE_FOR}, got {solve_for!r}")
        defaults = dict(lr=lr, tol=tol, atol=atol, max_iter=max_iter, warm_start=warm_start, solve_for=solve_for)
        super().__init__(params, defaults)

    # ------------------------------------------------------------------------------------- helpers
    def _player_state(self, i: int) -> dict:
        return self.state[self.param_groups[i]["params"][0]]

    def _step_sizes(self, gx: Tensor, gy: Tensor) -> tuple[Tensor | float, Tensor | float]:
        """eta_x, eta_y: scalars here; per-coordinate vectors in ACGD."""
        return float(self.param_groups[0]["lr"]), float(self.param_groups[1]["lr"])

    def _system(self, nx: int, ny: int) -> int:
        """0: solve the min player's system, 1: the max player's."""
        mode = self.param_groups[0]["solve_for"]
        if mode == "min":
            return 0
        if mode == "max":
            return 1
        if mode == "auto":
            return 0 if nx <= ny else 1
        return self._player_state(0).get("next_system", 1)

    def _commit(self, system: int) -> None:
        """Update the optimizer's own state once the step is known to be finite."""
        if self.param_groups[0]["solve_for"] == "alternate":
            self._player_state(0)["next_system"] = 1 - system

    # ---------------------------------------------------------------------------------------- step
    def step(self, closure):  # type: ignore[override]
        name = type(self).__name__
        if closure is None:
            raise RuntimeError(
                f"{name}.step needs a closure returning (f, -f): it re-evaluates the game and takes second "
                "derivatives (mixed-precision plugins that call step() without a closure are not supported)"
            )
        gx_params = list(self.param_groups[0]["params"])
        gy_params = list(self.param_groups[1]["params"])
        check_full_precision(name, gx_params + gy_params)
        with torch.enable_grad():
            losses = closure()
            f = losses[0]
            check_full_precision(name, [], f)
            grads = torch.autograd.grad(f, gx_params + gy_params, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, gx_params + gy_params)]
        gx = flatten(grads[: len(gx_params)])
        gy = flatten(grads[len(gx_params):])
        gx_d, gy_d = gx.detach().clone(), gy.detach().clone()
        distributed_mean_([gx_d, gy_d])
        eta_x, eta_y = self._step_sizes(gx_d, gy_d)
        sx = eta_x.sqrt() if isinstance(eta_x, Tensor) else math.sqrt(eta_x)
        sy = eta_y.sqrt() if isinstance(eta_y, Tensor) else math.sqrt(eta_y)
        group = self.param_groups[0]
        hvps = 0

        def d_xy(v: Tensor) -> Tensor:  # D_xy v, v in y space
            nonlocal hvps
            hvps += 1
            return mixed_vp(gy, gx_params, v)

        def d_yx(v: Tensor) -> Tensor:  # D_yx v, v in x space
            nonlocal hvps
            hvps += 1
            return mixed_vp(gx, gy_params, v)

        system = self._system(gx_d.numel(), gy_d.numel())
        sx_state, sy_state = self._player_state(0), self._player_state(1)
        warm = group["warm_start"]
        tol, atol = math.sqrt(group["tol"]), math.sqrt(group["atol"])
        with torch.enable_grad():
            if system == 0:
                rhs = -sx * (gx_d + d_xy(eta_y * gy_d))

                def matvec(v):
                    h = d_yx(sx * v)
                    return v + sx * d_xy(eta_y * h), h

                res = conjugate_gradient(matvec, rhs, sx_state.get("warm") if warm else None, rtol=tol, atol=atol,
                                         max_iter=group["max_iter"], track_side=True)
                dx = sx * res.x
                cross = res.side if res.side is not None else torch.zeros_like(gy_d)  # D_yx dx
                dy = eta_y * (gy_d + cross)
            else:
                rhs = sy * (gy_d - d_yx(eta_x * gx_d))

                def matvec(v):
                    h = d_xy(sy * v)
                    return v + sy * d_yx(eta_x * h), h

                res = conjugate_gradient(matvec, rhs, sy_state.get("warm") if warm else None, rtol=tol, atol=atol,
                                         max_iter=group["max_iter"], track_side=True)
                dy = sy * res.x
                cross = res.side if res.side is not None else torch.zeros_like(gx_d)  # D_xy dy
                dx = -eta_x * (gx_d + cross)
        if not bool(torch.isfinite(dx).all() & torch.isfinite(dy).all()):
            raise DivergenceError(
                f"{name}: non-finite step (gradients or mixed second derivatives overflowed); the step was not "
                "applied. Lower the learning rate or change the loss."
            )
        self._commit(system)
        if warm:  # scaled solutions of both systems: u = dx / S_x, w = dy / S_y
            sx_state["warm"] = (dx / sx).detach()
            sy_state["warm"] = (dy / sy).detach()
        for st in (sx_state, sy_state):
            st["step"] = st.get("step", 0) + 1
        write_grads(gx_params, gx_d)
        write_grads(gy_params, -gy_d)
        add_flat_(gx_params, dx)
        add_flat_(gy_params, dy)
        players = self.players
        self.stats = {
            "cg_iters": float(res.iters),
            "hvp": float(hvps),
            "cg_residual": res.residual,
            "cg_converged": float(res.converged),
            "cg_system": float(system),
            f"step_norm/{players[0]}": torch.linalg.vector_norm(dx),
            f"step_norm/{players[1]}": torch.linalg.vector_norm(dy),
        }
        return f.detach()
