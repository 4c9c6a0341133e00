"""Adaptive competitive gradient descent (ACGD; Schaefer, Zheng & Anandkumar, "Implicit competitive
regularization in GANs", ICML 2020).

CGD (src/optim/cgd.py) whose step sizes are per-coordinate, RMSProp-style: for each player

    v <- beta v + (1 - beta) g^2,      eta = lr sqrt(1 - beta^t) / (sqrt(v) + eps)

(bias-corrected; g is the player's gradient of f, t the step count), and the CGD systems are taken
with the diagonal matrices eta_x, eta_y: the SPD system is preconditioned by S = eta^(1/2),

    (I + S_x D_xy eta_y D_yx S_x) u = -S_x (g_x + D_xy eta_y g_y),   dx = S_x u,
    dy = eta_y (g_y + D_yx dx),

and CG is warm-started from the previous step's scaled solution (the residual is then b - A u0; a warm
start worse than zero is dropped). Defaults follow the paper's DCGAN/WGAN setting: lr 1e-4 for both
players, beta 0.99, eps 1e-5, tol 1e-10 and atol 1e-16 (squared-residual convention of the authors'
code: |r|^2 <= max(tol |b|^2, atol)). The per-player ``lr`` is each param group's (schedulers work).

Float32/float64 only: with half/bfloat16 parameters or under autocast ``step`` raises.
"""
from __future__ import annotations

import torch
from torch import Tensor

from src.optim.cgd import CGD


class ACGD(CGD):
    def __init__(self, params, lr: float = 1e-4, beta: float = 0.99, eps: float = 1e-5, tol: float = 1e-10,
                 atol: float = 1e-16, max_iter: int | None = None, warm_start: bool = True,
                 solve_for: str = "auto"):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        super().__init__(params, lr=lr, tol=tol, atol=atol, max_iter=max_iter, warm_start=warm_start,
                         solve_for=solve_for)
        self.defaults.update(beta=beta, eps=eps)
        for group in self.param_groups:  # per-player overrides (e.g. players.generator.beta) win
            group.setdefault("beta", beta)
            group.setdefault("eps", eps)
        self._eta_means: list[Tensor] = []
        self._pending: list[Tensor] = []

    def _step_sizes(self, gx: Tensor, gy: Tensor) -> tuple[Tensor, Tensor]:
        etas, self._pending = [], []
        for i, g in enumerate((gx, gy)):
            group, state = self.param_groups[i], self._player_state(i)
            beta, eps = group["beta"], group["eps"]
            v = state["square_avg"] * beta if "square_avg" in state else torch.zeros_like(g)
            v.addcmul_(g, g, value=1 - beta)
            self._pending.append(v)  # stored by _commit once the step is known to be finite
            t = state.get("step", 0) + 1  # CGD.step increments "step" after the update
            bias_correction = 1 - beta**t
            etas.append(v.sqrt().add_(eps).reciprocal_().mul_(group["lr"] * bias_correction**0.5))
        self._eta_means = [e.mean() for e in etas]
        return etas[0], etas[1]

    def _commit(self, system: int) -> None:
        super()._commit(system)
        for i, v in enumerate(self._pending):
            self._player_state(i)["square_avg"] = v
        self._pending = []

    def step(self, closure):  # type: ignore[override]
        out = super().step(closure)
        for player, eta in zip(self.players, self._eta_means):  # the mean adaptive step size
            self.stats[f"eta_mean/{player}"] = eta
        return out
