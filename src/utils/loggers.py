"""The run's loggers: Lightning's, with what a run directory needs.

* :class:`WandbLogger` names the wandb run after the command-line overrides (unless ``name`` is set),
  groups the jobs of one sweep (``<group>/<sweep dir name>``), closes the previous job's run in a sweep
  process, and continues the wandb run recorded in ``<save_dir>/run.json`` when the run directory is being
  resumed (src/train.py writes it), so a resumed run logs into the same wandb run; it sends metrics as
  checkpoints are written, so that the run holds the whole curve once after a crash and a resume.
* :class:`CSVLogger` writes ``<save_dir>/csv/metrics.csv``; on a resume it keeps the rows logged before the
  resumed step and drops the ones after it (logged by the interrupted attempt and logged again now), so
  the file holds the whole curve once.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger as _CSVLogger
from pytorch_lightning.loggers import WandbLogger as _WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from src.utils.config import hydra_overrides, sweep_name
from src.utils.resume import read_run_info


def run_name(overrides: list[str]) -> str | None:
    """A readable run name from the command-line overrides (paths and Hydra settings left out)."""
    keep = [o for o in overrides if not o.startswith(("ckpt_path", "hydra", "paths."))]
    return ",".join(keep)[:120] or None


class WandbLogger(_WandbLogger):
    """Metrics reach wandb when a checkpoint is written (and when the run ends), not before: a run that
    crashes and resumes from its last checkpoint logs the iterations after it again, and wandb, whose
    history cannot be rewound, would hold them twice. So the wandb run holds the whole curve once; live
    charts follow the checkpoints (every validation and ``callbacks.last_checkpoint.every_n_train_steps``)."""

    def __init__(self, save_dir: str, name: str | None = None, group: str | None = None, **kwargs):
        sweep = sweep_name()
        if sweep is not None:  # the jobs of one sweep form one wandb group: <group>/<sweep dir name>
            import wandb

            group = f"{group}/{sweep}" if group else sweep
            if wandb.run is not None:  # the previous job of this sweep process left its run open:
                wandb.finish()         # close it, or this job would log into it
        previous = read_run_info(Path(save_dir)).get("wandb_id")
        if previous and kwargs.get("id") is None:  # a resumed run directory: continue its wandb run
            kwargs.update(id=previous, resume="allow")
        super().__init__(save_dir=save_dir, name=name or run_name(hydra_overrides()), group=group, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning passes it unset; wandb warns it is deprecated
            self._wandb_init.pop("anonymous", None)
        self._pending: list[tuple[dict, int | None]] = []
        self._saved_step = -1  # the iteration of the newest checkpoint

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self._pending.append((dict(metrics), step))
        self._flush(self._saved_step)

    def _flush(self, through: float) -> None:
        """Send the pending rows of the iterations up to `through` (all of them with inf)."""
        keep = []
        for metrics, step in self._pending:
            if step is None or step <= through:
                super().log_metrics(metrics, step)
            else:
                keep.append((metrics, step))
        self._pending = keep

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback) -> None:
        # the iteration the checkpoint holds (its own rows are logged right after it is written)
        self._saved_step = max(self._saved_step, int(checkpoint_callback._last_global_step_saved))
        self._flush(self._saved_step)
        super().after_save_checkpoint(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if status == "success":  # a failed run may be resumed from its checkpoint: its tail stays in the CSV
            self._flush(float("inf"))
        super().finalize(status)


class _ResumingWriter(ExperimentWriter):
    """Fabric's CSV writer deletes an existing metrics.csv; this one continues it."""

    def _check_log_dir_exists(self) -> None:
        self._resuming = self._fs.isfile(self.metrics_file_path)
        if self._resuming:
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def save(self) -> None:
        if self.metrics and getattr(self, "_resuming", False):
            self._resuming = False
            self._drop_from(min(int(m["step"]) for m in self.metrics))
        super().save()

    def _drop_from(self, step: int) -> None:
        """Remove the rows at or after `step` (what the interrupted attempt logged past its checkpoint)."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = [r for r in csv.DictReader(file) if r.get("step") in (None, "") or int(float(r["step"])) < step]
        tmp = f"{self.metrics_file_path}.{os.getpid()}.tmp"
        with self._fs.open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)


class CSVLogger(_CSVLogger):
    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingWriter(log_dir=self.log_dir)
        return self._experiment
