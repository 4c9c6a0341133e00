"""Consensus optimization (Mescheder, Nowozin & Geiger, "The numerics of GANs", NeurIPS 2017).

With v(w) the joint gradient field (each player's gradient of its own loss) and L(w) = |v(w)|^2 / 2,

    w+ = w - eta (v + gamma grad L),        grad L = J^T v  (J = dv/dw),

the consensus term pulling the iterates towards points where the field vanishes, which damps the
rotation that stalls simultaneous gradient descent on GANs. grad L costs one double-backward product
(v is taken with ``create_graph=True``). With ``rmsprop=True`` (the paper's setting: RMSProp, lr 1e-4,
gamma 10) the combined direction d = v + gamma J^T v is scaled per coordinate:
s <- alpha s + (1 - alpha) d^2, w -= eta d / (sqrt(s) + eps).

v and J^T v are averaged over processes when torch.distributed is initialised (the local product is
taken against the averaged v, so the average is the global J^T v). ``.grad`` holds v.
``stats``: consensus (|v|^2 / 2), hvp, step_norm/<player>.
"""
from __future__ import annotations

import torch

from src.optim.base import GameOptimizer, distributed_mean_
from src.optim.extragradient import own_gradients
from src.optim.hvp import flatten, mixed_vp, unflatten, write_grads


class Consensus(GameOptimizer):
    def __init__(self, params, lr: float = 1e-4, gamma: float = 10.0, rmsprop: bool = True, alpha: float = 0.9,
                 eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        super().__init__(params, dict(lr=lr, gamma=gamma, rmsprop=rmsprop, alpha=alpha, eps=eps))

    def step(self, closure):  # type: ignore[override]
        if closure is None:
            raise RuntimeError("Consensus.step needs a closure returning one loss per player")
        groups = self.param_groups
        all_params = [p for g in groups for p in g["params"]]
        with torch.enable_grad():
            losses, grads = own_gradients(self, closure, create_graph=True)
            v = flatten([g for gs in grads for g in gs])
            v_d = v.detach().clone()
            distributed_mean_([v_d])
            gamma = groups[0]["gamma"]
            jtv = mixed_vp(v, all_params, v_d, retain_graph=False) if gamma != 0 else torch.zeros_like(v_d)
        direction = v_d + gamma * jtv
        sizes = [sum(p.numel() for p in g["params"]) for g in groups]
        with torch.no_grad():
            for group, d, vg in zip(groups, torch.split(direction, sizes), torch.split(v_d, sizes)):
                params = group["params"]
                if group["rmsprop"]:
                    state = self.state[params[0]]
                    if "square_avg" not in state:
                        state["square_avg"] = torch.zeros_like(d)
                    s = state["square_avg"]
                    s.mul_(group["alpha"]).addcmul_(d, d, value=1 - group["alpha"])
                    d = d / (s.sqrt() + group["eps"])
                torch._foreach_add_(params, unflatten(d, params), alpha=-group["lr"])
                write_grads(params, vg)
                self.stats[f"step_norm/{group['player']}"] = torch.linalg.vector_norm(d) * group["lr"]
        self.stats["consensus"] = 0.5 * torch.dot(v_d, v_d)
        self.stats["hvp"] = 1.0 if gamma != 0 else 0.0
        return losses[0].detach()
