"""The contract between two-player LightningModules and optimizers.

Per-player optimizers are plain ``torch.optim.Optimizer`` s (SGD, Adam, nonlinear CG, ...): the module
calls ``backward`` on a player's loss and ``step()``. A *game* optimizer is one optimizer over both
players that needs the losses themselves, not only gradients (CGD needs mixed second derivatives,
extragradient needs to re-evaluate the losses at an extrapolated point). It subclasses
:class:`GameOptimizer`:

* its param groups are one per player, in the order (player 0, player 1), each with a ``"player"`` name;
* ``step(closure)`` takes a closure that evaluates the game at the current parameters and returns one
  loss per player, in group order; each player minimises its own loss. An optimizer with
  ``requires_zero_sum = True`` reads ``losses[0]`` as the game value f that player 0 minimises and
  player 1 maximises (the module then returns ``(f, -f)``);
* it computes gradients itself (``torch.autograd.grad``), writes each player's gradient into ``.grad``
  (so gradient norms can be logged) and averages gradients and Hessian-vector products over the default
  process group when one is initialised (so DDP needs no reducer hooks);
* like every optimizer here it may expose ``stats``: a dict of floats/tensors describing the last step
  (CG iterations, beta, step norms), which the module logs under ``optim/``.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

GameClosure = Callable[[], Sequence[Tensor]]


class GameOptimizer(Optimizer):
    requires_zero_sum: ClassVar[bool] = False

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        if len(self.param_groups) != 2 or any("player" not in g for g in self.param_groups):
            raise ValueError(
                f"{type(self).__name__} is a two-player game optimizer: pass two param groups, each with a "
                "'player' name, e.g. [{'params': G.parameters(), 'player': 'generator'}, {...}]"
            )
        self.stats: dict[str, float | Tensor] = {}

    @property
    def players(self) -> list[str]:
        return [g["player"] for g in self.param_groups]

    def step(self, closure: GameClosure):  # type: ignore[override]
        raise NotImplementedError


def is_game_optimizer(factory) -> bool:
    """Whether an optimizer class (or a functools.partial of one) is a joint game optimizer."""
    target = getattr(factory, "func", factory)
    while hasattr(target, "func"):
        target = target.func
    return isinstance(target, type) and issubclass(target, GameOptimizer)


def distributed_mean_(tensors: Sequence[Tensor]) -> None:
    """Average tensors in place over the default process group, if one is initialised."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    if world == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    torch.distributed.all_reduce(flat)
    flat /= world
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def check_adam_hyperparameters(lr: float, betas, eps: float) -> None:
    """The range checks shared by the Adam-scaled game optimizers (ValueError, as torch.optim does)."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be in [0, 1), got {betas}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
