"""The progress bar redraws at most every interval_s during training, and always at the last batch."""
from __future__ import annotations

from types import SimpleNamespace

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from src.callbacks.progress import ProgressBar


def _trainer(step: int, last: bool = False, max_steps: int = 100):
    return SimpleNamespace(global_step=step, max_steps=max_steps, is_last_batch=last)


def test_redraws_once_per_interval_and_at_the_last_batch():
    bar = ProgressBar(interval_s=3600)
    assert bar.due(_trainer(1))                      # the first batch draws
    assert not any(bar.due(_trainer(s)) for s in range(2, 50))
    assert bar.due(_trainer(50, last=True))          # an epoch's last batch
    assert bar.due(_trainer(100))                    # the run's last iteration (max_steps reached)
    every = ProgressBar(interval_s=0)
    assert all(every.due(_trainer(s)) for s in range(1, 10))


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_bar_ends_complete_when_it_skips_batches(tmp_path):
    bar = ProgressBar(interval_s=3600)
    data = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=2, callbacks=[bar], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(_Tiny(), data)
    task = next(t for t in bar.progress.tasks if t.id == bar.train_progress_bar_id)
    assert task.completed == 16  # 16 batches per epoch: the last one was drawn
    assert trainer.global_step == 32
