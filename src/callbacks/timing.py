"""Throughput and start-up time, as a user waits for them.

* ``perf/train_batches_per_s``: training iterations per second of wall time, after a warm-up: the clock
  runs from one batch's start to the next, so data loading, the step and every hook count; validation
  does not (its time is taken out). Logged at the logging iterations, cumulative since the warm-up.
* ``perf/first_step_s``: seconds from process start to the first training batch.
"""
from __future__ import annotations

import time

import pytorch_lightning as pl


def process_start_time() -> float:
    """Wall-clock time at which this process started (from /proc on Linux, else this module's import)."""
    try:
        import os

        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):  # pragma: no cover - not Linux
        return _IMPORT_TIME


_IMPORT_TIME = time.time()


class Timing(pl.Callback):
    def __init__(self, warmup_batches: int = 5):
        self.warmup = warmup_batches
        self.batches = 0
        self.first_step_s: float | None = None
        self._start: float | None = None   # perf_counter at the start of the first measured batch
        self._paused = 0.0                 # validation time since then
        self._validation_started: float | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        pl_module.metric_modes["perf/train_batches_per_s"] = "max"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_s is None:
            self.first_step_s = time.time() - process_start_time()
        if self.batches == self.warmup and self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if not pl_module.logging_now:
            return
        if self.first_step_s is not None:
            pl_module.log("perf/first_step_s", self.first_step_s, on_step=True, on_epoch=False)
        rate = self.rate()
        if rate is not None:
            pl_module.log("perf/train_batches_per_s", rate, on_step=True, on_epoch=False)

    def rate(self) -> float | None:
        """Iterations per second since the warm-up (validation excluded), None before two measured ones."""
        measured = self.batches - self.warmup  # batches since the clock started (at the first one's start)
        if self._start is None or measured < 2:
            return None
        elapsed = time.perf_counter() - self._start - self._paused
        return measured / elapsed if elapsed > 0 else None

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._validation_started is not None and self._start is not None:
            self._paused += time.perf_counter() - self._validation_started
        self._validation_started = None
