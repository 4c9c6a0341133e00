"""Extragradient methods for games (Korpelevich 1976, "The extragradient method for finding saddle
points"; Gidel, Berard, Vignoud, Vincent & Lacoste-Julien, "A variational inequality perspective on
generative adversarial networks", ICLR 2019).

General-sum: F(w) is the joint vector field of each player's gradient of its *own* loss (the closure
returns one loss per player). One step::

    w_half = w - eta F(w)              (extrapolation)
    w+     = w - eta F(w_half)         (update, from the same w)

``past=True`` is "extrapolation from the past" (Popov 1980; Gidel et al. 2019, Alg. 3): the
extrapolation reuses the gradient of the previous step's extrapolated point, ``w_half = w - eta
F(w_half_prev)``, so each step evaluates the game once (the first step evaluates F(w) as well).

:class:`ExtraAdam` (Gidel et al. 2019, Alg. 4) replaces F by Adam's scaled direction
m_hat / (sqrt(v_hat) + eps); the moments are updated at both the extrapolation and the update (so
with ``past=True`` the saved gradient enters them twice, as in Alg. 4, option 2), and the bias
correction counts those moment updates.

The closure is evaluated at w (and at w_half); the losses the module receives are those of the first
evaluation of the step (at w_half_t for ``past=True`` after the first step). ``.grad`` holds the
gradients that made the update, F(w_half). Per-player ``lr`` comes from each param group.
"""
from __future__ import annotations

import torch
from torch import Tensor

from src.optim.base import GameOptimizer, check_adam_hyperparameters, distributed_mean_


def own_gradients(optimizer: GameOptimizer, closure, create_graph: bool = False):
    """Evaluate the game and return (losses, per-player gradient lists of each player's own loss),
    averaged over processes."""
    with torch.enable_grad():
        losses = closure()
        if len(losses) != len(optimizer.param_groups):
            raise RuntimeError(f"the closure must return one loss per player ({optimizer.players}), got {len(losses)}")
        grads = []
        for i, group in enumerate(optimizer.param_groups):
            params = group["params"]
            g = torch.autograd.grad(losses[i], params, retain_graph=create_graph or i < len(losses) - 1,
                                    create_graph=create_graph, allow_unused=True)
            grads.append([torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params)])
    if not create_graph:
        distributed_mean_([g for gs in grads for g in gs])
    return losses, grads


def set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        if p.grad is None or p.grad.shape != p.shape:
            p.grad = g.detach().clone()
        else:
            p.grad.copy_(g)


class Extragradient(GameOptimizer):
    """Extragradient (``past=False``) or extrapolation from the past (``past=True``), SGD-scaled."""

    def __init__(self, params, lr: float = 1e-2, past: bool = False):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, past=past))

    def _direction(self, i: int, grads: list[Tensor]) -> list[Tensor]:
        """The player's update direction for these gradients (SGD: the gradients)."""
        return grads

    def _group_state(self, i: int) -> dict:
        return self.state[self.param_groups[i]["params"][0]]

    def step(self, closure):  # type: ignore[override]
        if closure is None:
            raise RuntimeError(f"{type(self).__name__}.step needs a closure returning one loss per player")
        groups = self.param_groups
        past = groups[0]["past"]
        first_losses = None
        if past and "past_grad" in self._group_state(0):
            extra_grads = [[s.clone() for s in self._past(i)] for i in range(len(groups))]
        else:
            first_losses, extra_grads = own_gradients(self, closure)
        # extrapolation from w
        saved = []
        with torch.no_grad():
            for i, group in enumerate(groups):
                params = group["params"]
                saved.append([p.detach().clone() for p in params])
                torch._foreach_add_(params, self._direction(i, extra_grads[i]), alpha=-group["lr"])
        try:
            losses, grads = own_gradients(self, closure)
        except BaseException:  # e.g. a non-finite loss at w_half: leave the parameters at w
            with torch.no_grad():
                for group, w in zip(groups, saved):
                    torch._foreach_copy_(group["params"], w)
            raise
        # update from w with the gradients at w_half
        with torch.no_grad():
            for i, group in enumerate(groups):
                params = group["params"]
                direction = self._direction(i, grads[i])
                torch._foreach_add_(saved[i], direction, alpha=-group["lr"])
                torch._foreach_copy_(params, saved[i])
                set_grads(params, grads[i])
                if past:
                    for p, g in zip(params, grads[i]):
                        self.state[p]["past_grad"] = g.detach().clone()
                self.stats[f"step_norm/{group['player']}"] = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(d) for d in direction])) * group["lr"]
        self.stats["evaluations"] = 1.0 if first_losses is None else 2.0
        return (first_losses or losses)[0].detach()

    def _past(self, i: int) -> list[Tensor]:
        return [self.state[p]["past_grad"] for p in self.param_groups[i]["params"]]


class ExtraAdam(Extragradient):
    """Extra-Adam (Gidel et al. 2019, Alg. 4); ``past=True`` for Past-Extra-Adam. Defaults follow the
    paper's WGAN setting: betas (0.5, 0.9), eps 1e-8."""

    def __init__(self, params, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.9), eps: float = 1e-8,
                 past: bool = False):
        check_adam_hyperparameters(lr, betas, eps)
        GameOptimizer.__init__(self, params, dict(lr=lr, betas=tuple(betas), eps=eps, past=past))

    def _direction(self, i: int, grads: list[Tensor]) -> list[Tensor]:
        group = self.param_groups[i]
        params = group["params"]
        beta1, beta2 = group["betas"]
        state = self._group_state(i)
        if "moments" not in state:
            state["moments"] = 0
            for p in params:
                self.state[p]["exp_avg"] = torch.zeros_like(p)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p)
        state["moments"] += 1
        t = state["moments"]
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, (1 - beta2**t) ** 0.5)
        torch._foreach_add_(denom, group["eps"])
        direction = torch._foreach_div(m, denom)
        torch._foreach_div_(direction, 1 - beta1**t)
        return direction
