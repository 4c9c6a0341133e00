"""Optimistic gradient descent and Optimistic Adam (Daskalakis, Ilyas, Syrgkanis & Zeng, "Training GANs
with optimism", ICLR 2018; Popov 1980; Rakhlin & Sridharan 2013).

    w_{t+1} = w_t - 2 eta u_t + eta u_{t-1}

with u_t = g_t (optimistic GD) or u_t = m_hat_t / (sqrt(v_hat_t) + eps) (Optimistic Adam, the paper's
Algorithm 1, with Adam's bias correction), and u_{-1} = 0 (the first step is w - 2 eta u_0).

Per-player optimizers (plain ``torch.optim.Optimizer``): the update needs only the player's own
gradient now and its own direction one step ago, so it fits the per-player half of the contract
(the module computes gradients; ``step()`` reads ``.grad``) and needs no game re-evaluation. Whether
the players see the same point is then the module's choice: simultaneous (both gradients at w_t,
optimistic gradient descent-ascent, which converges in the last iterate on bilinear games) or
alternating. ``stats``: ``step_norm`` of the last update.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer

from src.optim.base import check_adam_hyperparameters


class OptimisticGD(Optimizer):
    def __init__(self, params, lr: float = 1e-2):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr))
        self.stats: dict = {}

    def _direction(self, group, params, grads):
        return [g.clone() for g in grads]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sq = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            for p in params:
                if "prev" not in self.state[p]:
                    self.state[p]["prev"] = torch.zeros_like(p)
            prev = [self.state[p]["prev"] for p in params]
            u = self._direction(group, params, grads)
            # w -= lr (2 u - u_prev)
            delta = torch._foreach_mul(u, 2.0)
            torch._foreach_sub_(delta, prev)
            torch._foreach_add_(params, delta, alpha=-group["lr"])
            torch._foreach_copy_(prev, u)
            sq.extend(torch._foreach_norm(delta))
        if sq:
            lr = self.param_groups[0]["lr"]
            self.stats = {"step_norm": torch.linalg.vector_norm(torch.stack(sq)) * lr}
        return loss


class OptimisticAdam(OptimisticGD):
    def __init__(self, params, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.9), eps: float = 1e-8):
        check_adam_hyperparameters(lr, betas, eps)
        Optimizer.__init__(self, params, dict(lr=lr, betas=tuple(betas), eps=eps))
        self.stats = {}

    def _direction(self, group, params, grads):
        beta1, beta2 = group["betas"]
        for p in params:
            st = self.state[p]
            if "exp_avg" not in st:
                st["step"] = 0
                st["exp_avg"] = torch.zeros_like(p)
                st["exp_avg_sq"] = torch.zeros_like(p)
            st["step"] += 1
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        bc1 = [1 - beta1 ** self.state[p]["step"] for p in params]
        bc2 = [(1 - beta2 ** self.state[p]["step"]) ** 0.5 for p in params]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bc2)
        torch._foreach_add_(denom, group["eps"])
        u = torch._foreach_div(m, denom)
        torch._foreach_div_(u, bc1)
        return u
