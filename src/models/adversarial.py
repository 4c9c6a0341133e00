"""What every two-player (adversarial) LightningModule shares: the players, their optimizers, one
update per player or one joint game update, divergence checks and per-player logging.

Subclasses define ``players`` (e.g. ``{"generator": G, "discriminator": D}``; player 0 is the one that
minimises the game value in zero-sum games) and call :meth:`player_step` or :meth:`joint_step` from
``training_step``. Nothing else in a subclass knows which optimizer it got.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from src.losses.reduction import Mean, global_mean, local_mean
from src.optim.base import distributed_mean_
from src.optim.factory import JOINT, PlayerOptimizers, build_optimizers
from src.utils.errors import DivergenceError


def grad_norm(params) -> Tensor:
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _is_finite(value: Tensor) -> bool:
    return bool(torch.isfinite(value.detach()).all())


class TwoPlayerModule(pl.LightningModule):
    def __init__(self, optimizer: DictConfig | None, seed: int = 0, monitor: Mapping | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.optimizer_cfg = optimizer
        self.seed = int(seed)
        self.monitor = dict(monitor or {})
        self._plan: PlayerOptimizers | None = None
        # Training batches started (the current one included): with the seed, it fixes every random draw
        # of a step, so resuming from a checkpoint continues bitwise-identically without global RNG state.
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------------------------------- players
    @property
    def players(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    @property
    def player_names(self) -> list[str]:
        return list(self.players)

    @property
    def pixel_mean(self) -> Mean:
        """How a loss averages its pixels (or samples): in training over the global batch of all DDP
        processes (exact data parallelism with ignore labels and masks; src/losses/reduction.py), in
        evaluation over this process's own."""
        return global_mean if self.training else local_mean

    # -------------------------------------------------------------------------------------- optimizers
    def player_param_groups(self) -> dict[str, list[dict]]:
        """Optional param groups per player, e.g. ``{"segmenter": [{"params": [...], "lr_mult": 10.0,
        "group": "head"}]}`` for a head trained at 10x the learning rate (see src/optim/factory.py).
        Default: none (one group per player)."""
        return {}

    def plan_optimizers(self) -> PlayerOptimizers:
        if self._plan is None:
            self._plan = build_optimizers(self.optimizer_cfg, self.players, param_groups=self.player_param_groups())
        return self._plan

    @property
    def joint(self) -> bool:
        return self.plan_optimizers().joint

    def configure_optimizers(self):
        self._plan = None  # rebuild against the (possibly moved) parameters
        plan = self.plan_optimizers()
        names = list(plan.optimizers)
        optimizers = [plan.optimizers[n] for n in names]
        schedulers = [plan.schedulers[n] for n in names if n in plan.schedulers]
        return (optimizers, schedulers) if schedulers else optimizers

    def _index(self, name: str) -> int:
        return list(self.plan_optimizers().optimizers).index(name)

    def _lightning_optimizer(self, name: str):
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        return opts[self._index(name)]

    def _step_scheduler(self, name: str) -> None:
        if name in self.plan_optimizers().schedulers:
            scheds = self.lr_schedulers()
            scheds = scheds if isinstance(scheds, list) else [scheds]
            scheds[list(self.plan_optimizers().schedulers).index(name)].step()

    # ------------------------------------------------------------------------------------ randomness
    def step_generator(self, stream: int = 0) -> torch.Generator:
        """A generator seeded by (seed, batches seen, stream): the step's noise, independent of global
        RNG state and therefore reproduced exactly after a resume."""
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + int(self.batches_seen) * 101 + stream) % (2**63 - 1))
        return g

    def step_randn(self, n: int, *shape: int, stream: int = 0, uniform: bool = False) -> Tensor:
        """This process's `n` rows of the step's random draw for the whole global batch: the draw is
        the same whatever the number of processes, so 2 processes with batch b see exactly the rows
        1 process with batch 2b sees (DDP equivalence)."""
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        draw = torch.rand if uniform else torch.randn
        rows = draw(n * world, *shape, device=self.device, generator=self.step_generator(stream))
        return rows[rank * n:(rank + 1) * n]

    # ------------------------------------------------------------------------------------------ steps
    def check_finite(self, losses: Mapping[str, Tensor]) -> None:
        for name, value in losses.items():
            if not _is_finite(value):
                raise DivergenceError(
                    f"non-finite {name} ({float(value.detach().float().mean())}) at step {self.global_step} "
                    f"(batch {int(self.batches_seen)}); the step was not applied and the last checkpoint "
                    "is intact. Lower the learning rate, change the loss or enable gradient clipping."
                )

    def player_step(self, name: str, loss: Tensor) -> None:
        """One update of one player's own optimizer on its own loss."""
        self.check_finite({f"{name} loss": loss})
        opt = self._lightning_optimizer(name)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        params = list(self.players[name].parameters())
        distributed_mean_([p.grad for p in params if p.grad is not None])
        norm = grad_norm(params)
        if not math.isfinite(float(norm)):
            raise DivergenceError(f"non-finite {name} gradient at step {self.global_step}; the step was not "
                                  "applied and the last checkpoint is intact. Lower the learning rate or enable "
                                  "gradient clipping.")
        self.log(f"grad_norm/{name}", norm, on_step=True, on_epoch=False)
        opt.step()
        self._step_scheduler(name)
        self._log_optimizer(name, opt.optimizer)

    def joint_step(self, closure: Callable[[], Sequence[Tensor]]) -> Sequence[Tensor]:
        """One joint update of both players by a game optimizer; returns the losses it evaluated."""
        names = self.player_names
        evaluated: list[Sequence[Tensor]] = []

        def checked_closure():
            losses = closure()
            self.check_finite({f"{n} loss": l for n, l in zip(names, losses)})
            evaluated.append(losses)
            return losses

        opt = self._lightning_optimizer(JOINT)
        opt.step(closure=checked_closure)
        for name in names:
            self.log(f"grad_norm/{name}", grad_norm(self.players[name].parameters()), on_step=True, on_epoch=False)
        self._step_scheduler(JOINT)
        self._log_optimizer(JOINT, opt.optimizer)
        return evaluated[0]

    def _log_optimizer(self, name: str, optimizer) -> None:
        for group in optimizer.param_groups:
            suffix = f"/{group['group']}" if group.get("group") else ""
            self.log(f"lr/{group.get('player', name)}{suffix}", float(group["lr"]), on_step=True, on_epoch=False)
        for key, value in getattr(optimizer, "stats", {}).items():
            value = value.detach().float() if isinstance(value, Tensor) else float(value)
            prefix = "optim" if name == JOINT else f"optim/{name}"
            self.log(f"{prefix}/{key}", value, on_step=True, on_epoch=False)

    def _bypass_ddp_reducer(self) -> None:
        """Under DDP, two players step from separate backward passes in one forward, which DDP's
        reducer (one backward per forward, every parameter used) cannot follow. So the reducer is
        switched off and each player's gradients are averaged explicitly across processes right after
        its backward (game optimizers average their own gradients and Hessian-vector products)."""
        model = self._trainer.model if self._trainer is not None else None
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model.require_backward_grad_sync = False

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._bypass_ddp_reducer()
        # Counted at the start of the batch, so that a checkpoint written during the batch's
        # on_train_batch_end hooks (callbacks run before this module's) already includes it.
        self.batches_seen += 1
