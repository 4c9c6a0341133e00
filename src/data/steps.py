"""A data module for models that need no data (analytic games, src/models/game.py): each training epoch
is ``steps_per_epoch`` dummy batches (zeros), validation one batch. It reuses the resumable sampler of
src/data/base.py, so a checkpoint taken mid-epoch resumes at the next step exactly."""
from __future__ import annotations

import torch

from src.data.base import ResumableDataModule, Tensors


class StepsDataModule(ResumableDataModule):
    def __init__(self, steps_per_epoch: int = 100, batch_size: int = 1, val_batch_size: int | None = None,
                 **kwargs):
        if int(steps_per_epoch) < 1:
            raise ValueError(f"dataset.steps_per_epoch must be >= 1, got {steps_per_epoch}")
        super().__init__(batch_size=batch_size, val_batch_size=val_batch_size or batch_size, **kwargs)
        self.steps_per_epoch = int(steps_per_epoch)
        self.shape = (1,)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        _, world = self._rank()
        n = self.steps_per_epoch * self.batch_size * world  # steps_per_epoch batches on every process
        self.train_set = Tensors(torch.zeros(n, 1))
        self.val_set = Tensors(torch.zeros(self.val_batch_size * world, 1))
