"""Lightning's progress bar, with the run's budget in its own unit: ``Epoch 3/11`` for an epoch budget,
``Epoch 3 · iteration 1,250/40,000`` for an iteration budget (``trainer.max_steps``), never ``Epoch 0/-2``;
and without the logger's version number (``v_num``), which says nothing about training."""
from __future__ import annotations

from pytorch_lightning.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            text = f"Epoch {current_epoch}/{trainer.max_epochs - 1}"
        else:
            text = f"Epoch {current_epoch}"
        if trainer.max_steps > 0:
            text += f" · iteration {trainer.global_step:,}/{trainer.max_steps:,}"
        return f"{text:{len(self.validation_description)}}"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if (self.progress is not None and self.train_progress_bar_id is not None and trainer.max_steps > 0
                and trainer.global_step % max(self.refresh_rate, 1) == 0):
            self.progress.update(self.train_progress_bar_id,
                                 description=self._get_train_description(trainer.current_epoch))
            self.refresh()
