"""Graceful stop on SIGTERM / SIGINT / SIGUSR2 (a scheduler's preemption, a Ctrl-C, SLURM's warning
before the time limit): the current training step finishes, `last.ckpt` is written, summary.json says
"interrupted", and the process exits with 128 + the signal number. `python -m src.run
ckpt_path=<run>/checkpoints/last.ckpt` (or re-running the same sweep) then continues to the same final
weights as an uninterrupted run, bitwise on CPU.

A handler that was installed before training (submitit's, which requeues the job on SIGUSR2 when it
nears its time limit) is not bypassed: once the checkpoint is written, src.run hands the signal over to
it (``RunInterrupted.hand_over``), so the requeued job resumes from this step, not from an older one."""
from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch
from torch.distributed import ReduceOp

from src.utils.errors import RunInterrupted


class GracefulShutdown(pl.Callback):
    def __init__(self, dirpath: str, signals: Sequence[str] = ("SIGTERM", "SIGINT", "SIGUSR2")):
        self.dirpath = Path(dirpath)
        # signals this platform lacks (SIGUSR2 on Windows) are skipped
        self.signals = [getattr(signal, name) for name in signals if hasattr(signal, name)]
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum

    def on_fit_start(self, trainer, pl_module) -> None:
        self.received = None
        # the handlers installed before the run (submitit's); Lightning registers its own after this hook
        self._previous = {sig: signal.getsignal(sig) for sig in self.signals}

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._install()

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()

    def _install(self) -> None:
        """Replace, not chain, Lightning's SIGTERM handler (registered after on_fit_start): under DDP it
        forwards the signal to the other local ranks and runs a broadcast inside the signal handler, which can
        pair with another collective of a rank that is elsewhere in its step and hang both. Our handler only
        sets a flag; the ranks agree on it in `on_train_batch_end`."""
        self._set_handlers({sig: self._handler for sig in self.signals})

    def on_fit_end(self, trainer, pl_module) -> None:
        self._restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore()

    def _restore(self) -> None:
        self._set_handlers(self._previous)

    @staticmethod
    def _set_handlers(handlers: dict) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal works in the main thread only
        for sig, handler in handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)  # None: set from C

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.world_size > 1:
            # All processes stop at the same step: every rank asks every batch (one tiny all-reduce), since
            # a signal can reach the ranks of a multi-node job a batch apart; any rank's signal stops all.
            mine = torch.tensor(int(self.received or 0), device=pl_module.device)
            self.received = int(trainer.strategy.reduce(mine, reduce_op=ReduceOp.MAX)) or None
        if self.received is None:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)
        name = signal.Signals(self.received).name
        previous = self._previous.get(self.received)
        # the handler installed before the run (submitit's: requeue this job, then exit) gets the signal
        hand_over = None
        if callable(previous) and trainer.is_global_zero:
            hand_over = functools.partial(previous, self.received, None)

        raise RunInterrupted(f"{name} received at step {trainer.global_step}: saved {path}; resume with "
                             f"`python -m src.run ckpt_path={path}`", exit_code=128 + int(self.received),
                             hand_over=hand_over)
