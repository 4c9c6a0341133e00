"""Flat-vector helpers, mixed second-derivative products and a conjugate-gradient solver for the game
optimizers (CGD, ACGD, consensus).

Second derivatives are never formed: a product ``D_xy v = d/dx (grad_y f . v)`` is one extra backward
pass through the graph of a gradient taken with ``create_graph=True`` (Pearlmutter 1994, "Fast exact
multiplication by the Hessian"). Linear systems ``A u = b`` with ``A`` symmetric positive definite are
solved by conjugate gradients (Hestenes & Stiefel 1952) given only ``v -> A v``.

When ``torch.distributed`` is initialised, gradients and products are averaged over the default
process group (:func:`src.optim.base.distributed_mean_`): with a loss that is a mean over each
process's shard, the average of the local products is the product of the global mean loss, so every
process then holds identical vectors and runs identical CG iterations.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

from src.optim.base import distributed_mean_

Params = Sequence[Tensor]

SUPPORTED_DTYPES = (torch.float32, torch.float64)


# -------------------------------------------------------------------------------------- flat vectors
def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """One contiguous 1-D tensor holding ``tensors`` one after another (keeps autograd history)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vec: Tensor, like: Params) -> list[Tensor]:
    """Views of ``vec`` shaped like ``like`` (the inverse of :func:`flatten`)."""
    sizes = [p.numel() for p in like]
    return [chunk.view_as(p) for chunk, p in zip(torch.split(vec, sizes), like)]


def numel(params: Params) -> int:
    return sum(p.numel() for p in params)


def _materialise(grads, params: Params) -> list[Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def flat_grad(output: Tensor, params: Params, create_graph: bool = False, retain_graph: bool | None = None,
              average: bool = False) -> Tensor:
    """grad of a scalar ``output`` w.r.t. ``params`` as one flat vector; parameters it does not depend
    on get zeros. ``average`` averages the (detached) result over processes."""
    grads = torch.autograd.grad(output, list(params), create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    flat = flatten(_materialise(grads, params))
    if average:
        distributed_mean_([flat])
    return flat


def mixed_vp(grad_flat: Tensor, params: Params, vec: Tensor, retain_graph: bool = True,
             average: bool = True) -> Tensor:
    """``d/dparams (grad_flat . vec)`` as a flat vector, ``vec`` held constant.

    With ``grad_flat = grad_y f`` (taken with ``create_graph=True``) and ``params = x`` this is
    ``D_xy vec`` (``D_xy = d^2 f / dx dy``); with ``params = y`` it is the Hessian-vector product
    ``D_yy vec``. Zero where ``grad_flat`` does not depend on ``params`` (e.g. f linear in y)."""
    params = list(params)
    if not grad_flat.requires_grad:
        out = torch.zeros(numel(params), dtype=vec.dtype, device=vec.device)
    else:
        grads = torch.autograd.grad(grad_flat, params, grad_outputs=vec.detach(), retain_graph=retain_graph,
                                    allow_unused=True)
        out = flatten(_materialise(grads, params))
    if average:
        distributed_mean_([out])
    return out


def write_grads(params: Params, flat: Tensor) -> None:
    """Store a flat gradient into ``p.grad`` (so the module can log gradient norms)."""
    for p, g in zip(params, unflatten(flat.detach(), params)):
        if p.grad is None or p.grad.shape != p.shape:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)


def add_flat_(params: Params, flat: Tensor, alpha: float = 1.0) -> None:
    """params += alpha * flat, vectorised over the parameter list."""
    with torch.no_grad():
        torch._foreach_add_(list(params), unflatten(flat, params), alpha=alpha)


def check_full_precision(name: str, params: Params, *values: Tensor) -> None:
    """Second-order game optimizers run in float32/float64 only: CG on products of half-precision
    gradients loses the small eta^2 D_xy D_yx term entirely and its residual never reaches tol."""
    devices = {p.device.type for p in params} | {"cpu"}
    for dev in devices:
        try:
            active = torch.is_autocast_enabled(dev)
        except TypeError:  # older torch: no device argument
            active = torch.is_autocast_enabled() if dev == "cuda" else torch.is_autocast_cpu_enabled()
        if active:
            raise RuntimeError(
                f"{name} does not support mixed precision: autocast is active on {dev!r}. Train in full "
                "precision (trainer.precision=32-true or 64-true) and without torch.autocast."
            )
    for t in list(params) + list(values):
        if t.dtype not in SUPPORTED_DTYPES:
            raise RuntimeError(
                f"{name} does not support mixed precision: got a {t.dtype} tensor; it runs in float32 or "
                "float64 only (trainer.precision=32-true or 64-true)."
            )


# ------------------------------------------------------------------------------- conjugate gradient
@dataclass
class CGResult:
    x: Tensor            # the solution
    iters: int           # CG iterations (one matvec each)
    matvecs: int         # matvecs, including the warm start's initial residual
    residual: float      # |b - A x| / |b| (absolute when b = 0)
    converged: bool
    side: Tensor | None  # the side product L x (see `conjugate_gradient`); None when x == 0 or not tracked


def conjugate_gradient(matvec: Callable[[Tensor], Tensor | tuple[Tensor, Tensor]], b: Tensor,
                       x0: Tensor | None = None, rtol: float = 1e-5, atol: float = 0.0,
                       max_iter: int | None = None, track_side: bool = False) -> CGResult:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` given ``matvec(v) = A v``.

    Stops when ``|r| <= max(rtol |b|, atol)`` (r = b - A x) or after ``max_iter`` iterations (default:
    the dimension, where exact CG terminates). A warm start ``x0`` starts from the residual
    ``b - A x0`` (one matvec); if that residual is larger than ``|b|`` the start is dropped for zero.

    ``track_side``: ``matvec`` returns ``(A v, L v)`` for some linear map ``L`` computed on the way
    (for CGD, ``L v = D_yx eta_x^(1/2) v``); the solver then also returns ``L x``, accumulated with the
    same coefficients as ``x``, which saves the extra product a closed-form recovery would cost.
    """
    n = b.numel()
    max_iter = n if max_iter is None else int(max_iter)

    def apply(v):
        out = matvec(v)
        return out if track_side else (out, None)

    bb = torch.dot(b, b)
    threshold = torch.maximum(bb * rtol**2, torch.as_tensor(atol**2, dtype=b.dtype, device=b.device))
    matvecs = 0
    x = torch.zeros_like(b)
    side = None
    r = b.clone()
    rr = bb
    if x0 is not None:
        ax0, side0 = apply(x0)
        matvecs += 1
        r0 = b - ax0
        rr0 = torch.dot(r0, r0)
        if bool(rr0 <= bb):
            x, r, rr, side = x0.clone(), r0, rr0, side0
    iters = 0
    converged = bool(rr <= threshold)
    p = r.clone()
    while not converged and iters < max_iter:
        ap, side_p = apply(p)
        matvecs += 1
        iters += 1
        alpha = rr / torch.dot(p, ap)
        x.add_(p * alpha)
        if track_side:
            side = side_p * alpha if side is None else side.add_(side_p * alpha)
        r.sub_(ap * alpha)
        rr_new = torch.dot(r, r)
        converged = bool(rr_new <= threshold)
        if converged:
            rr = rr_new
            break
        p = r + p * (rr_new / rr)
        rr = rr_new
    bnorm = float(bb.sqrt())
    residual = float(rr.sqrt()) / bnorm if bnorm > 0 else float(rr.sqrt())
    return CGResult(x=x, iters=iters, matvecs=matvecs, residual=residual, converged=converged, side=side)
