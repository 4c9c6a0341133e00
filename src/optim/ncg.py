"""Nonlinear conjugate gradient (NCG), one optimizer per player.

Naganuma & Iiduka, "Conjugate Gradient Method for Generative Adversarial Networks", AISTATS 2023
(arXiv 2203.14495). With g_n the (stochastic) gradient of the player's own loss::

    d_0 = -g_0,    d_n = -g_n + gamma_n d_{n-1},    theta_{n+1} = theta_n + alpha_n d_n,
    gamma_n = c * min(beta_n, 1/2)

where beta_n is one of the classic conjugate-gradient rules (y = g_n - g_{n-1}, d = d_{n-1})::

    FR  = |g_n|^2 / |g_{n-1}|^2          PRP = g_n.y / |g_{n-1}|^2
    HS  = g_n.y / d.y                    DY  = |g_n|^2 / d.y
    HS_DY  = max(0, min(HS, DY))         FR_PRP = max(0, min(FR, PRP))
    HZ  = HS - mu |y|^2 (g_n.d) / (d.y)^2,  mu = 2  (Hager & Zhang 2005)

and beta_n = 0 when the rule's denominator is zero (or below the rounding noise of the inner products it
is made of), i.e. the direction restarts along -g_n. ``cap=None, c=1`` gives the textbook method
(gamma = beta), which with an exact line search minimises an n-dimensional convex quadratic in n steps.

Implementation notes
--------------------
* Each param group keeps three flat, 64-byte aligned buffers: the previous gradient, the previous direction
  and a scratch buffer the new gradient is copied into (the scratch and the previous gradient then swap
  roles, so the previous gradient is always a *copy*, never a reference to ``p.grad``, which the next
  backward overwrites in place). The per-parameter state entries ``prev_grad`` / ``prev_dir`` are views
  into these buffers, so ``state_dict`` is the usual per-parameter one and round-trips exactly. The inner
  products are a few ``dot`` calls on the flat buffers (global scope) or on per-tensor segments (tensor
  scope); the direction is two flat ops and the update one ``torch._foreach_add_`` into the parameters.
* The group keeps the inner products of its last step, (|g|^2, d.g, |d|^2), in the state of its first
  parameter (``gram``, with ``gram_at`` = (step, number of parameters)), so a step needs only g_n.g_n,
  g_n.d_{n-1} and, for the rules that use y, g_n.g_{n-1}; d_n.g_n and |d_n|^2 follow algebraically.
* The scalar arithmetic (beta, gamma, statistics) runs on Python floats when the parameters are on the CPU
  (reading a CPU tensor costs no synchronisation, and a dozen tiny tensor ops would cost more than the
  update itself) and on 0-dim tensors otherwise, so that ``step`` never waits for an accelerator. One
  function, :func:`conjugate_beta`, serves both.
* The step counter ``step`` (a Python int) is kept per parameter. If the parameters that have gradients
  change from one step to the next (a parameter gets its first gradient, or had none last step), the group
  restarts its direction (d = -g).
* ``stats`` holds the last step's ``beta``, ``gamma`` (the coefficient of d_{n-1} actually used; averaged
  over tensors in tensor scope), ``cos_dir_neg_grad`` (cosine of d_n and -g_n), ``step_norm``
  (alpha_n |d_n|) and ``lr`` (alpha_n): floats on the CPU, 0-dim tensors on accelerators.

Line-search hook
----------------
``line_search`` (constructor argument or attribute) is an optional callable
``line_search(params, grads, directions, lr) -> alpha``. It is called once per group and step, after the
direction d_n is known and before the parameters move: ``params`` are the group's parameters that have
gradients, ``grads`` the gradients used (weight decay included), ``directions`` the direction d_n (all
lists shaped like ``params``, read-only), ``lr`` the group's step size. The parameters then move by
``alpha * d_n``. An exact line search on a quadratic returns ``-g.d / d.A d``; a backtracking search can
evaluate the loss at ``p + t d`` itself (and must restore the parameters).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import torch
from torch import Tensor
from torch.optim import Optimizer

BETA_RULES = ("FR", "PRP", "HS", "DY", "HS_DY", "FR_PRP", "HZ")
BETA_SCOPES = ("global", "tensor")

LineSearch = Callable[[list[Tensor], list[Tensor], list[Tensor], float], "float | Tensor"]

_ALIGN = 16  # elements: each parameter's segment of a flat buffer starts 64-byte aligned (fp32)


# --------------------------------------------------------------------------------------------- beta
# Scalars are Python floats (parameters on the CPU) or tensors (elementwise); these helpers serve both.
Scalar = Union[float, Tensor]


def _where(cond, a, b):
    return torch.where(cond, a, b) if isinstance(cond, Tensor) else (a if cond else b)


def _minimum(a, b):
    return torch.minimum(a, b) if isinstance(a, Tensor) else min(a, b)


def _clamp(x, lo=None, hi=None):
    if isinstance(x, Tensor):
        return x.clamp(min=lo, max=hi)
    x = x if lo is None else max(x, lo)
    return x if hi is None else min(x, hi)


def _sqrt(x):
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)


def conjugate_beta(
    rule: str,
    gg: Scalar,
    g_gp: Scalar,
    g_dp: Scalar,
    gp_gp: Scalar,
    dp_gp: Scalar,
    dp_dp: Scalar,
    *,
    mu: float = 2.0,
    eps: float | None = None,
    dtype: torch.dtype | None = None,
) -> Scalar:
    """The conjugate-gradient parameter beta_n of `rule` from inner products (Naganuma & Iiduka 2023, Sec. 3;
    HZ: Hager & Zhang 2005). The inputs are Python floats or tensors of one shape (elementwise: 0-dim for
    one beta over all parameters, one entry per parameter tensor otherwise).

    gg = g_n.g_n, g_gp = g_n.g_{n-1}, g_dp = g_n.d_{n-1}, gp_gp = g_{n-1}.g_{n-1}, dp_gp = d_{n-1}.g_{n-1},
    dp_dp = d_{n-1}.d_{n-1}. y = g_n - g_{n-1}, so g_n.y = gg - g_gp, d.y = g_dp - dp_gp and
    |y|^2 = gg - 2 g_gp + gp_gp (FR and DY do not read g_gp).

    beta is 0 where the rule's denominator is 0: |g_{n-1}|^2 below the smallest normal number of `dtype`
    (FR, PRP), or |d.y| below ``eps * |d| * (|g_n| + |g_{n-1}|)`` (HS, DY, HZ), the size of the rounding error
    of d.y computed from its two terms. `dtype` is the dtype the inner products were computed in (default:
    the inputs' dtype, float64 for floats); ``eps`` defaults to 8 machine epsilons of it.
    """
    rule = rule.upper()
    if rule not in BETA_RULES:
        raise ValueError(f"beta_rule must be one of {BETA_RULES}, got {rule!r}")
    finfo = torch.finfo(dtype or (gg.dtype if isinstance(gg, Tensor) else torch.float64))
    if eps is None:
        eps = 8 * finfo.eps
    if rule in ("FR", "PRP", "FR_PRP"):
        zero = gp_gp <= finfo.tiny
        den = _where(zero, 1.0, gp_gp)
        fr = _where(zero, 0.0, gg / den) if rule != "PRP" else None
        prp = _where(zero, 0.0, (gg - g_gp) / den) if rule != "FR" else None
        if rule == "FR":
            return fr
        if rule == "PRP":
            return prp
        return _clamp(_minimum(fr, prp), lo=0.0)
    dy = g_dp - dp_gp
    zero = abs(dy) <= eps * _sqrt(dp_dp) * (_sqrt(gg) + _sqrt(gp_gp))
    den = _where(zero, 1.0, dy)
    if rule == "DY":
        return _where(zero, 0.0, gg / den)
    hs = _where(zero, 0.0, (gg - g_gp) / den)
    if rule == "HS":
        return hs
    if rule == "HS_DY":
        return _clamp(_minimum(hs, _where(zero, 0.0, gg / den)), lo=0.0)
    # HZ
    yy = _clamp(gg - 2 * g_gp + gp_gp, lo=0.0)
    return _where(zero, 0.0, hs - mu * yy * g_dp / (den * den))


def conjugate_gamma(beta: Scalar, c: float = 1.0, cap: float | None = 0.5, floor: float | None = None) -> Scalar:
    """gamma_n = c * min(beta_n, cap) (Naganuma & Iiduka 2023: cap = 1/2, c in (0, 1]); cap None: c * beta_n.
    `floor` (not in the paper, default None) also bounds beta from below: PRP, HS, HZ and DY can be large
    and negative with stochastic gradients, which the cap alone does not limit."""
    gamma = beta if cap is None and floor is None else _clamp(beta, lo=floor, hi=cap)
    return gamma * c if c != 1.0 else gamma


# ------------------------------------------------------------------------------------ flat buffers
@dataclass
class _Flat:
    """Flat buffers of one param group (see the module docstring). `views[name]` are per-parameter views
    shaped like the parameters, `segs[name]` the same segments as 1-D views."""

    params: tuple[Tensor, ...]
    states: tuple[dict, ...] = ()  # the per-parameter state dicts the views were put in
    buffers: dict[str, Tensor] = field(default_factory=dict)
    views: dict[str, list[Tensor]] = field(default_factory=dict)
    segs: dict[str, list[Tensor]] = field(default_factory=dict)


def _layout(params: Sequence[Tensor]) -> tuple[list[int], int]:
    offsets, total = [], 0
    for p in params:
        offsets.append(total)
        total += -(-p.numel() // _ALIGN) * _ALIGN
    return offsets, total


def _check_group(params: Sequence[Tensor], name: str) -> None:
    first = params[0]
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        if p.dtype != first.dtype or p.device != first.device:
            raise ValueError(f"{name}: all parameters of a param group must share dtype and device "
                             f"(got {first.dtype}/{first.device} and {p.dtype}/{p.device}); use one group each")
        if not p.is_floating_point():
            raise ValueError(f"{name} needs floating-point parameters, got {p.dtype}")


@dataclass
class _Step:
    """What :meth:`ConjugateDirectionOptimizer._direction` computed: n earlier steps; the flat gradient g_n
    (weight decay included) and direction d_n are ``flat.buffers["prev_grad"]`` / ``["prev_dir"]``; gamma is
    the coefficient of d_{n-1} actually used (scale included); gg, dg, dd = g_n.g_n, d_n.g_n, d_n.d_n summed
    over tensors (beta and gamma: averaged over tensors in tensor scope). Floats on the CPU, else tensors."""

    flat: _Flat
    n: int
    host: bool
    grad: Tensor
    beta: Scalar
    gamma: Scalar
    gg: Scalar
    dg: Scalar
    dd: Scalar


_NEEDS_G_GP = ("PRP", "HS", "HS_DY", "FR_PRP", "HZ")


class ConjugateDirectionOptimizer(Optimizer):
    """Shared machinery of :class:`NCG` and :class:`~src.optim.ncg_adam.NCGAdam`: flat buffers, the inner
    products, beta (:func:`conjugate_beta`) and the direction d_n = -g_n + s_n gamma_n d_{n-1} (s_n = 1 for
    NCG, M / n^a for NCGAdam). Subclasses implement :meth:`_update`."""

    #: per-parameter state entries backed by flat buffers
    _state_buffers: tuple[str, ...] = ("prev_grad", "prev_dir")
    #: scratch flat buffers that are not state ("g" receives the new gradient)
    _scratch_buffers: tuple[str, ...] = ("g",)
    #: scalar arithmetic on Python floats (True) or on 0-dim tensors (False); None: floats iff the
    #: parameters are on the CPU (tests set False to run the accelerator path on the CPU)
    host_scalars: bool | None = None

    def __init__(self, params, defaults: dict):
        _validate(defaults, type(self).__name__)
        super().__init__(params, defaults)  # validates each group (add_param_group)
        self._flat: dict[int, _Flat] = {}
        self.stats: dict[str, float | Tensor] = {}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._flat = {}
        self.stats = {}

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        _validate(self.param_groups[-1], type(self).__name__)

    # ----------------------------------------------------------------------------------- buffers
    def _flat_for(self, index: int, params: list[Tensor]) -> _Flat:
        """The group's flat buffers for this set of parameters; (re)built on the first step, after
        load_state_dict or a device move (both replace the per-parameter state dicts, whose entries are then
        no longer our views), or when the set of parameters with gradients changes. Existing state values
        are copied in."""
        flat = self._flat.get(index)
        names = self._state_buffers
        state = self.state
        if (
            flat is not None
            and len(flat.params) == len(params)
            and all(a is b and state[a] is st for a, b, st in zip(flat.params, params, flat.states))
            and flat.states[0].get(names[-1]) is flat.views[names[-1]][0]
        ):
            return flat
        _check_group(params, type(self).__name__)
        offsets, total = _layout(params)
        ref = params[0]
        flat = _Flat(params=tuple(params))
        for name in self._scratch_buffers + names:
            buf = torch.zeros(total, dtype=ref.dtype, device=ref.device)
            segs = [buf[o:o + p.numel()] for o, p in zip(offsets, params)]
            flat.buffers[name], flat.segs[name] = buf, segs
            flat.views[name] = [s.view(p.shape) for s, p in zip(segs, params)]
        for name in names:
            for p, view in zip(params, flat.views[name]):
                old = state[p].get(name)
                if old is not None and old.shape == p.shape:
                    view.copy_(old)
                state[p][name] = view
        flat.states = tuple(state[p] for p in params)
        self._flat[index] = flat
        return flat

    # --------------------------------------------------------------------------------- direction
    @staticmethod
    def _dots(scope: str, flat: _Flat, pairs: Sequence[tuple[str, str]], host: bool):
        """Inner products of flat buffers, one per pair: each 0-dim (global scope) or of shape (T,) (tensor
        scope); on the host as floats / lists of floats."""
        if scope == "global":
            dots = [flat.buffers[a].dot(flat.buffers[b]) for a, b in pairs]
        else:
            dots = [torch.stack([x.dot(y) for x, y in zip(flat.segs[a], flat.segs[b])]) for a, b in pairs]
        return torch.stack(dots).tolist() if host else dots

    @staticmethod
    def _gram(value, host: bool, scope: str, count: int, like: Tensor):
        """The stored (|g|^2, d.g, |d|^2) of the last step in the form this step computes with (floats on the
        host, tensors elsewhere), or None if missing or of another scope / parameter count."""
        if value is None:
            return None
        if isinstance(value, Tensor):
            if tuple(value.shape) != ((3,) if scope == "global" else (3, count)):
                return None
            return value.tolist() if host else value.to(like.device).unbind(0)
        value = list(value)
        ok = len(value) == 3 and all(
            isinstance(v, float) if scope == "global" else (isinstance(v, list) and len(v) == count) for v in value
        )
        if not ok:
            return None
        return value if host else torch.tensor(value, dtype=like.dtype, device=like.device).unbind(0)

    def _coefficients(self, group: dict, s: float, dtype, gg, g_gp, g_dp, gp_gp, dp_gp, dp_dp):
        """beta_n, the coefficient gamma = s * c * min(beta_n, cap) of d_{n-1}, d_n.g_n and |d_n|^2."""
        beta = conjugate_beta(group["beta_rule"], gg, g_gp, g_dp, gp_gp, dp_gp, dp_dp, mu=group["mu"],
                              eps=group["beta_eps"], dtype=dtype)
        gamma = conjugate_gamma(beta, group["c"], group["cap"], group["floor"])
        if s != 1.0:
            gamma = gamma * s
        dg = gamma * g_dp - gg
        dd = _clamp(gg - 2 * gamma * g_dp + gamma * gamma * dp_dp, lo=0.0)
        return beta, gamma, dg, dd

    def _direction(self, index: int, group: dict, params: list[Tensor], scale: Callable[[int], float]) -> _Step:
        """Compute d_n = -g_n + scale(n) gamma_n d_{n-1} into the group's ``prev_dir`` buffer (which then
        holds d_n) and make ``prev_grad`` hold g_n (weight decay included)."""
        flat = self._flat_for(index, params)
        g, dp = flat.buffers["g"], flat.buffers["prev_dir"]
        torch._foreach_copy_(flat.views["g"], [p.grad for p in params])
        if group["weight_decay"]:
            torch._foreach_add_(flat.views["g"], params, alpha=group["weight_decay"])

        steps = [self.state[p].get("step", 0) for p in params]
        n = max(steps)
        scope, rule, count = group["beta_scope"], group["beta_rule"], len(params)
        host = g.device.type == "cpu" if self.host_scalars is None else self.host_scalars
        head = self.state[params[0]]
        # Warm only if every parameter took the last step, and that step's inner products are over them.
        warm = n > 0 and min(steps) == n and head.get("gram_at") == (n, count)
        gram = self._gram(head.get("gram"), host, scope, count, g) if warm else None
        per_tensor_floats = host and scope == "tensor"

        if gram is not None:  # d_n = -g_n + gamma d_{n-1}
            pairs = [("g", "g"), ("g", "prev_dir")] + ([("g", "prev_grad")] if rule in _NEEDS_G_GP else [])
            dots = self._dots(scope, flat, pairs, host)
            gg, g_dp, g_gp = dots[0], dots[1], dots[2] if len(dots) > 2 else dots[0]
            s = scale(n)
            if per_tensor_floats:
                rows = [self._coefficients(group, s, g.dtype, *v) for v in zip(gg, g_gp, g_dp, *gram)]
                beta, gamma, dg, dd = (list(col) for col in zip(*rows))
            else:
                beta, gamma, dg, dd = self._coefficients(group, s, g.dtype, gg, g_gp, g_dp, *gram)
            if scope == "global":
                dp.mul_(gamma)
            else:
                torch._foreach_mul_(flat.segs["prev_dir"], gamma if host else list(gamma.unbind()))
            dp.sub_(g)
        else:  # first step, or a restart: d_n = -g_n
            (gg,) = self._dots(scope, flat, [("g", "g")], host)
            torch.neg(g, out=dp)
            if per_tensor_floats:
                beta, gamma, dg, dd = [0.0] * count, [0.0] * count, [-x for x in gg], list(gg)
            else:
                beta = gamma = 0.0 * gg
                dg, dd = -gg, gg
        head["gram"] = (gg, dg, dd) if host else torch.stack([gg, dg, dd])
        head["gram_at"] = (n + 1, count)
        # The scratch now holds g_n: it becomes prev_grad, and the old prev_grad the next scratch.
        for name in ("buffers", "views", "segs"):
            parts = getattr(flat, name)
            parts["g"], parts["prev_grad"] = parts["prev_grad"], parts["g"]
        for p, view in zip(params, flat.views["prev_grad"]):
            state = self.state[p]
            state["prev_grad"], state["step"] = view, n + 1
        if per_tensor_floats:
            beta, gamma, gg, dg, dd = sum(beta) / count, sum(gamma) / count, sum(gg), sum(dg), sum(dd)
        elif scope == "tensor":
            beta, gamma, gg, dg, dd = beta.mean(), gamma.mean(), gg.sum(), dg.sum(), dd.sum()
        return _Step(flat=flat, n=n, host=host, grad=flat.buffers["prev_grad"], beta=beta, gamma=gamma,
                     gg=gg, dg=dg, dd=dd)

    @staticmethod
    def _cosine(dg: Scalar, dd: Scalar, gg: Scalar) -> Scalar:
        """cos(d, -g) from d.g, |d|^2 and |g|^2 (0 where either vector is 0)."""
        tiny = torch.finfo(dd.dtype if isinstance(dd, Tensor) else torch.float64).tiny
        return -dg / _clamp(_sqrt(dd * gg), lo=tiny)

    # -------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        stats: dict[str, float | Tensor] = {}
        several = len(self.param_groups) > 1
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            group_stats = self._update(index, group, params)
            suffix = f"/{group.get('group') or group.get('player') or index}" if several else ""
            stats.update({f"{k}{suffix}": v for k, v in group_stats.items()})
        self.stats = stats
        return loss

    def _update(self, index: int, group: dict, params: list[Tensor]) -> dict[str, float | Tensor]:
        raise NotImplementedError


def _validate(group: dict, name: str) -> None:
    def need(ok: bool, what: str):
        if not ok:
            raise ValueError(f"{name}: {what}")

    if "lr" in group:
        need(group["lr"] >= 0, f"lr must be >= 0, got {group['lr']}")
    if "beta_rule" in group:
        rule = str(group["beta_rule"]).upper()
        need(rule in BETA_RULES, f"beta_rule must be one of {BETA_RULES}, got {group['beta_rule']!r}")
        group["beta_rule"] = rule
    if "beta_scope" in group:
        need(group["beta_scope"] in BETA_SCOPES,
             f"beta_scope must be one of {BETA_SCOPES}, got {group['beta_scope']!r}")
    if "c" in group:
        need(0 < group["c"] <= 1, f"c must be in (0, 1], got {group['c']}")
    if group.get("cap") is not None:
        need(group["cap"] > 0, f"cap must be > 0 or null, got {group['cap']}")
    if group.get("floor") is not None:
        need(group["floor"] <= 0, f"floor must be <= 0 or null, got {group['floor']}")
        need(group.get("cap") is None or group["floor"] <= group["cap"], "floor must be <= cap")
    if "mu" in group:
        need(group["mu"] >= 0, f"mu must be >= 0, got {group['mu']}")
    if group.get("beta_eps") is not None:
        need(group["beta_eps"] >= 0, f"beta_eps must be >= 0 or null, got {group['beta_eps']}")
    if "weight_decay" in group:
        need(group["weight_decay"] >= 0, f"weight_decay must be >= 0, got {group['weight_decay']}")


class NCG(ConjugateDirectionOptimizer):
    """Nonlinear conjugate gradient for one player (Naganuma & Iiduka, AISTATS 2023, arXiv 2203.14495).

    Args:
        lr: step size alpha (the paper's grid: 5e-3, 1e-3, 5e-4, 1e-4, 5e-5); its schedules are LR schedulers
            (src/optim/schedules.py, torch.optim.lr_scheduler).
        beta_rule: FR, PRP, HS, DY, HS_DY, FR_PRP or HZ.
        c: gamma_n = c * min(beta_n, cap), c in (0, 1] (the paper: 0.5, 0.75, 1.0).
        cap: the bound on beta (the paper's 1/2); None disables it (textbook CG with c = 1).
        floor: an optional lower bound on beta (not in the paper; e.g. -0.5), see :func:`conjugate_gamma`.
        beta_scope: "global" (one beta over all the group's parameters, textbook) or "tensor" (one beta per
            parameter tensor, as in the authors' toy code).
        weight_decay: L2 penalty added to the gradient.
        mu: the HZ constant (2).
        beta_eps: relative tolerance below which d.y counts as 0 (None: 8 machine epsilons).
        line_search: optional hook, see the module docstring.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        beta_rule: str = "FR",
        c: float = 1.0,
        cap: float | None = 0.5,
        floor: float | None = None,
        beta_scope: str = "global",
        weight_decay: float = 0.0,
        mu: float = 2.0,
        beta_eps: float | None = None,
        line_search: LineSearch | None = None,
    ):
        defaults = dict(lr=lr, beta_rule=beta_rule, c=c, cap=cap, floor=floor, beta_scope=beta_scope,
                        weight_decay=weight_decay, mu=mu, beta_eps=beta_eps)
        super().__init__(params, defaults)
        self.line_search = line_search

    def _update(self, index, group, params):
        st = self._direction(index, group, params, scale=_one)
        alpha: float | Tensor = group["lr"]
        directions = st.flat.views["prev_dir"]
        if getattr(self, "line_search", None) is not None:  # (not pickled with the optimizer)
            alpha = self.line_search(list(params), st.flat.views["prev_grad"], directions, alpha)
        if isinstance(alpha, Tensor):
            torch._foreach_add_(params, torch._foreach_mul(directions, alpha))
        else:
            torch._foreach_add_(params, directions, alpha=alpha)
        step_norm = abs(alpha) * _sqrt(st.dd)
        return {"beta": st.beta, "gamma": st.gamma, "cos_dir_neg_grad": self._cosine(st.dg, st.dd, st.gg),
                "step_norm": step_norm, "lr": alpha}


def _one(n: int) -> float:
    return 1.0
