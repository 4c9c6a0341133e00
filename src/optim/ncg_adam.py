"""Adam along a conjugate-gradient direction (CoBA form), one optimizer per player.

Kobayashi & Iiduka, "Conjugate-gradient-based Adam for stochastic optimization and its application to
deep learning" (arXiv 2003.00231), as used for GANs by the same group (Naganuma & Iiduka, AISTATS 2023).
With g_t the gradient at step t = 1, 2, ...::

    d_1 = -g_1,    d_t = -g_t + (M / t^a) gamma_t d_{t-1}
    m_t = b1 m_{t-1} + (1 - b1) d_t,    v_t = b2 v_{t-1} + (1 - b2) g_t^2
    theta_t = theta_{t-1} + lr * mhat_t / (sqrt(vhat_t) + eps)

with mhat = m / (1 - b1^t), vhat = v / (1 - b2^t). d is a descent direction, so the update *adds*
lr * mhat / (...) (with M = 0 this is exactly Adam). gamma_t = c * min(beta_t, cap) with beta_t from
:func:`src.optim.ncg.conjugate_beta` (defaults: HS, c = 1, no cap, i.e. gamma = beta as in CoBA); the
M / t^a factor (M = 1e-3, a = 1 + 1e-8) makes the conjugate term vanish over time.

The direction machinery (flat buffers, inner products, restarts, state layout) is the one of
:class:`src.optim.ncg.NCG`; ``exp_avg`` and ``exp_avg_sq`` are flat-buffer views in the per-parameter state.
"""
from __future__ import annotations

import math

import torch

from src.optim.ncg import ConjugateDirectionOptimizer


class NCGAdam(ConjugateDirectionOptimizer):
    """CoBA: Adam moments of the conjugate direction (Kobayashi & Iiduka, arXiv 2003.00231).

    Args:
        lr: Adam step size.
        betas: (b1, b2) of the moment averages.
        eps: Adam's denominator term.
        beta_rule, c, cap, floor, beta_scope, mu, beta_eps: as in :class:`~src.optim.ncg.NCG` (defaults HS, 1,
            None, None, global): gamma_t = c * min(beta_t, cap).
        M, a: the conjugate term is scaled by M / t^a.
        weight_decay: L2 penalty added to the gradient.
    """

    _state_buffers = ("prev_grad", "prev_dir", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        beta_rule: str = "HS",
        M: float = 1e-3,
        a: float = 1.0 + 1e-8,
        c: float = 1.0,
        cap: float | None = None,
        floor: float | None = None,
        beta_scope: str = "global",
        weight_decay: float = 0.0,
        mu: float = 2.0,
        beta_eps: float | None = None,
    ):
        betas = tuple(float(b) for b in betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"NCGAdam: betas must be two numbers in [0, 1), got {betas}")
        if not eps > 0:
            raise ValueError(f"NCGAdam: eps must be > 0, got {eps}")
        if M < 0 or a < 0:
            raise ValueError(f"NCGAdam: M and a must be >= 0, got M={M}, a={a}")
        defaults = dict(lr=lr, betas=betas, eps=eps, beta_rule=beta_rule, M=M, a=a, c=c, cap=cap, floor=floor,
                        beta_scope=beta_scope, weight_decay=weight_decay, mu=mu, beta_eps=beta_eps)
        super().__init__(params, defaults)

    def _update(self, index, group, params):
        big_m, a = group["M"], group["a"]
        st = self._direction(
            index, group, params, scale=lambda n: big_m / (n + 1) ** a  # t = n + 1 >= 2 when d_{t-1} exists
        )
        t = st.n + 1
        b1, b2 = group["betas"]
        buf = st.flat.buffers
        # After _direction the scratch "g" is free until the next step: it receives the update.
        g, d, m, v, u = st.grad, buf["prev_dir"], buf["exp_avg"], buf["exp_avg_sq"], buf["g"]
        m.lerp_(d, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        # lr * mhat / (sqrt(vhat) + eps) = [lr sqrt(1 - b2^t) / (1 - b1^t)] * m / (sqrt(v) + eps sqrt(1 - b2^t))
        root2 = math.sqrt(1 - b2**t)
        torch.sqrt(v, out=u).add_(group["eps"] * root2)
        torch.div(m, u, out=u)
        step_size = group["lr"] * root2 / (1 - b1**t)
        torch._foreach_add_(params, st.flat.views["g"], alpha=step_size)
        norm = u.dot(u)
        step_norm = step_size * (math.sqrt(norm.item()) if st.host else norm.sqrt())
        return {"beta": st.beta, "gamma": st.gamma, "cos_dir_neg_grad": self._cosine(st.dg, st.dd, st.gg),
                "step_norm": step_norm, "lr": group["lr"]}
