"""What every trained model shares, whatever its number of players: the networks that own an optimizer
(``players``), their optimizers and schedulers from the `optimizer` group, one update of one player from
its loss, divergence checks, logging on logging iterations, step-seeded randomness and DDP gradient
averaging.

One *iteration* is one training batch: every player's updates for that batch (src/models/adversarial.py
for the update rules of two-player games; one-player models update their one player). Lightning sees one
optimizer (:class:`~src.optim.factory.PlayerOptimizers`) that steps once per iteration, so
``trainer.global_step``, ``trainer.max_steps``, checkpoint names, sample files, summary.json and the
loggers (which get the ``step`` logged here) all count iterations. Schedulers step once per iteration.
"""
from __future__ import annotations

import os
from typing import Mapping

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from src.losses.reduction import Mean, global_mean, local_mean
from src.optim.base import distributed_mean_
from src.optim.factory import JOINT, OptimizerGroup, PlayerOptimizers
from src.utils.errors import DivergenceError
from src.utils.schema import choose

MODES = ("min", "max")


def grad_norm(params) -> Tensor:
    """The 2-norm of the parameters' gradients together (0 if none has one)."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class TrainingModule(pl.LightningModule):
    """Subclasses define :attr:`players` (``{name: network}``, in update order) and
    :meth:`train_iteration` (the updates of one batch, through :meth:`update`), and record what they
    want logged with :meth:`record`.

    ``monitor`` (``{metric, mode}``) names the metric that checkpoints and sweeps follow; whether other
    metrics are better high or low is declared where they are made (:attr:`metric_modes`)."""

    def __init__(self, optimizer: OptimizerGroup | Mapping | None = None, seed: int = 0,
                 monitor: Mapping | None = None):
        super().__init__()
        self.automatic_optimization = False
        self.optimizer_group = (optimizer if optimizer is None or isinstance(optimizer, OptimizerGroup)
                                else OptimizerGroup(optimizer))
        self.seed = int(seed)
        self.monitor = dict(monitor or {})
        #: {metric name: "min" | "max"}: the direction of every metric whose "best" is not its minimum
        self.metric_modes: dict[str, str] = {}
        if self.monitor.get("metric"):
            self.metric_modes[self.monitor["metric"]] = choose(self.monitor.get("mode", "min"), MODES,
                                                               "model.monitor.mode")
        self._plan: PlayerOptimizers | None = None
        self._train_logs: dict[str, Tensor] = {}
        self._pending_checks: list[tuple[str, int, Tensor]] = []
        self._phase = 0

    #: the kinds of data (a dataset's ``meta.kind``) this model trains on
    data_kinds: tuple[str, ...] = ()

    @property
    def headline_metrics(self) -> list[str]:
        """The metrics an end-of-run table shows (besides the monitored one)."""
        return []

    # ----------------------------------------------------------------------------------------- players
    @property
    def players(self) -> dict[str, nn.Module]:
        """The networks with an optimizer of their own, in update order."""
        raise NotImplementedError

    def player_param_groups(self) -> dict[str, list[dict]]:
        """Optional param groups per player, e.g. ``{"segmenter": [{"params": [...], "lr_mult": 10.0,
        "group": "head"}]}`` for a head trained at 10x the learning rate (src/optim/factory.py)."""
        return {}

    def plan_optimizers(self) -> PlayerOptimizers:
        """The players' optimizers (built once; configuration errors surface here, before training)."""
        if self._plan is None:
            if self.optimizer_group is None:
                raise ValueError(f"{type(self).__name__} was built without an optimizer group: it cannot train")
            iterations = self.trainer.estimated_stepping_batches if self._trainer is not None else None
            self._plan = self.optimizer_group.build(self.players, self.player_param_groups(), iterations)
        return self._plan

    def check_training(self) -> None:
        """Errors of the training configuration (optimizer group, update rule), raised before training."""
        self.plan_optimizers()

    def configure_optimizers(self):
        self._plan = None  # rebuilt against the (possibly moved) parameters
        return self.plan_optimizers()

    # ------------------------------------------------------------------------------------- iterations
    @property
    def iteration(self) -> int:
        """0-based index of the current training iteration (= iterations completed before it)."""
        return self.global_step

    @property
    def logging_now(self) -> bool:
        """Whether this iteration's records reach the loggers: every ``trainer.log_every_n_steps`` and the
        run's last iteration."""
        trainer = self._trainer
        if trainer is None:
            return True
        every = max(int(trainer.log_every_n_steps or 1), 1)
        last = (0 < trainer.max_steps <= self.iteration + 1
                or (trainer.is_last_batch and trainer.max_epochs is not None
                    and 0 < trainer.max_epochs <= trainer.current_epoch + 1))
        return (self.iteration + 1) % every == 0 or last or bool(trainer.fast_dev_run)

    def train_iteration(self, batch) -> None:
        """The updates of one iteration (one batch), each through :meth:`update`."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> None:
        self._train_logs = {}
        self._phase = 0
        self.train_iteration(batch)
        self._end_iteration()

    def _end_iteration(self) -> None:
        plan = self.plan_optimizers()
        if self.logging_now:
            self.flush_checks()
            self._log_iteration(plan)
        plan.step_schedulers()
        self.optimizers().step()  # Lightning counts one step: one iteration

    def record(self, **values: Tensor | float) -> None:
        """Values to log as ``train/<name>`` at this iteration (the first record of a name wins, e.g. a
        game optimizer's first evaluation of the losses)."""
        for name, value in values.items():
            if name not in self._train_logs:
                self._train_logs[name] = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))

    def _log_iteration(self, plan: PlayerOptimizers) -> None:
        self.log("step", float(self.iteration + 1), on_step=True, on_epoch=False)
        for name, value in self._train_logs.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, prog_bar=name in self.progress_keys)
        for name, net in self.players.items():
            self.log(f"grad_norm/{name}", grad_norm(net.parameters()), on_step=True, on_epoch=False)
        for name, optimizer in plan.optimizers.items():
            for group in optimizer.param_groups:
                suffix = f"/{group['group']}" if group.get("group") else ""
                self.log(f"lr/{group.get('player', name)}{suffix}", float(group["lr"]), on_step=True, on_epoch=False)
            prefix = "optim" if name == JOINT else f"optim/{name}"
            for key, value in getattr(optimizer, "stats", {}).items():
                value = value.detach().float() if isinstance(value, Tensor) else float(value)
                self.log(f"{prefix}/{key}", value, on_step=True, on_epoch=False)

    #: recorded names shown in the progress bar
    progress_keys: tuple[str, ...] = ("loss", "d_loss", "g_loss")

    # ---------------------------------------------------------------------------------------- updates
    def gradients(self, name: str, loss: Tensor, retain_graph: bool = False) -> None:
        """The player's ``.grad``: d loss / d its own parameters only (no other player's parameters get a
        gradient), averaged over processes, checked to be finite."""
        self.check_finite({f"{name} loss": loss})
        params = [p for p in self.players[name].parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        distributed_mean_([p.grad for p in params if p.grad is not None])
        self.check_finite({f"{name} gradient": grad_norm(params)})

    def apply(self, name: str) -> None:
        """One step of the player's own optimizer on its ``.grad``."""
        self.plan_optimizers().optimizers[name].step()

    def update(self, name: str, loss: Tensor) -> None:
        """One update of one player on its own loss."""
        self.gradients(name, loss)
        self.apply(name)

    def check_finite(self, values: Mapping[str, Tensor]) -> None:
        """Stop on a non-finite loss or gradient. On the CPU the check is immediate (reading a CPU tensor
        costs nothing) and the step is not applied. On an accelerator it would wait for the device, so the
        flags are kept on the device and read at the logging iterations and before any checkpoint is
        written (:meth:`flush_checks`): divergence is caught within ``log_every_n_steps`` iterations, and no
        checkpoint ever holds what followed it."""
        for name, value in values.items():
            if value.device.type == "cpu":
                if not bool(torch.isfinite(value.detach()).all()):
                    raise DivergenceError(
                        f"non-finite {name} ({float(value.detach().float().mean())}) at step {self.iteration + 1}; "
                        f"the step was not applied. {self._checkpoint_note()} {self.DIVERGENCE_HINT}")
            else:
                self._pending_checks.append((name, self.iteration + 1, ~torch.isfinite(value.detach()).all()))

    DIVERGENCE_HINT = "Lower the learning rate, change the loss or enable gradient clipping."

    def flush_checks(self) -> None:
        """Read the accelerator's finiteness flags of the iterations since the last read (one sync)."""
        pending, self._pending_checks = self._pending_checks, []
        if not pending:
            return
        bad = torch.stack([flag for _, _, flag in pending]).nonzero()
        if len(bad):
            name, step, _ = pending[int(bad[0])]
            raise DivergenceError(f"non-finite {name} at step {step} (found at step {self.iteration + 1}: on an "
                                  "accelerator the check is read every log_every_n_steps iterations and before "
                                  f"each checkpoint, so the steps in between were applied and nothing was saved "
                                  f"after them). {self._checkpoint_note()} {self.DIVERGENCE_HINT}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.flush_checks()  # a diverged state is never written

    def _checkpoint_note(self) -> str:
        """What a divergence leaves behind: the last checkpoint written, if any."""
        trainer = self._trainer
        paths = []
        if trainer is not None:
            for callback in trainer.checkpoint_callbacks:
                paths += [p for p in (callback.last_model_path, callback.best_model_path) if p]
        if not paths:
            return "No checkpoint had been written yet."
        newest = max((p for p in paths if os.path.isfile(p)), key=os.path.getmtime, default=None)
        if newest is None:
            return "No checkpoint had been written yet."
        return f"The last checkpoint ({newest}) is intact and resumable."

    # ------------------------------------------------------------------------------------ randomness
    def step_generator(self, stream: int = 0) -> torch.Generator:
        """A generator seeded by (seed, iteration, phase + stream): the draws of one update of one
        iteration, independent of global RNG state and therefore reproduced exactly after a resume.
        The update rule sets the phase (the i-th update of an iteration draws from phase i), so the
        players of an alternating iteration see independent noise and a game optimizer that evaluates
        the game twice sees the same."""
        count = self.iteration + 1  # iterations begun
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + count * 101 + self._phase + stream) % (2**63 - 1))
        return g

    def step_randn(self, n: int, *shape: int, stream: int = 0, uniform: bool = False) -> Tensor:
        """This process's `n` rows of the step's random draw for the whole global batch: the draw is
        the same whatever the number of processes, so 2 processes with batch b see exactly the rows
        1 process with batch 2b sees (DDP equivalence)."""
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self._trainer is not None else (0, 1)
        draw = torch.rand if uniform else torch.randn
        rows = draw(n * world, *shape, device=self.device, generator=self.step_generator(stream))
        return rows[rank * n:(rank + 1) * n]

    # ------------------------------------------------------------------------------------------ hooks
    @property
    def pixel_mean(self) -> Mean:
        """How a loss averages its pixels (or samples): in training over the global batch of all DDP
        processes (exact data parallelism with ignore labels and masks; src/losses/reduction.py), in
        evaluation over this process's own."""
        return global_mean if self.training else local_mean

    def on_train_batch_start(self, batch, batch_idx) -> None:
        # Under DDP the players step from separate gradient computations, which DDP's reducer (one
        # backward per forward, every parameter used) cannot follow: it is switched off, and each
        # player's gradients are averaged across processes right after they are computed
        # (game optimizers average their own gradients and Hessian-vector products).
        model = self._trainer.model if self._trainer is not None else None
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model.require_backward_grad_sync = False

    def on_validation_epoch_end(self) -> None:
        """Validation (and test) numbers are logged at the iteration they follow (the same step as the
        training numbers, checkpoints and sample files of that iteration). Evaluation mixins call this last."""
        if self._trainer is not None and not self.trainer.sanity_checking:
            self.log("step", float(self.global_step), on_epoch=True, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()
