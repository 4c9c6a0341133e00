"""Throughput and start-up time: `perf/train_batches_per_s` (training batches per second, validation
excluded, after a warm-up) and `perf/first_step_s` (seconds from process start to the first training
batch), both logged and kept in summary.json."""
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
        self.busy = 0.0
        self._t0: float | None = None
        self.first_step_s: float | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        pl_module.metric_modes["perf/train_batches_per_s"] = "max"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_s is None:
            self.first_step_s = time.time() - process_start_time()
            pl_module.log("perf/first_step_s", self.first_step_s, on_step=True, on_epoch=False)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._t0 is None:
            return
        self.batches += 1
        if self.batches > self.warmup:
            self.busy += time.perf_counter() - self._t0
        self._t0 = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        measured = self.batches - self.warmup
        if measured > 0 and self.busy > 0:
            pl_module.log("perf/train_batches_per_s", measured / self.busy, on_epoch=True)
