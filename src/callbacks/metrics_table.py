"""A final metrics table in wandb: at the end of fit and of the final validation, one row per metric
(final value, its step, best value, its step) logged as the wandb table ``final_metrics``, and the same
final / best values written to the wandb run summary (``final/<metric>``, ``best/<metric>``), so runs of
a sweep (one wandb group per sweep) compare in the runs table. The protocol of the sample metrics (FID /
KID / IS backbone, checkpoint hash, sample counts) goes to the run's config as ``metric_protocols``.
Only rank 0 logs; loggers other than wandb are left alone."""
from __future__ import annotations

import math

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger

from src.callbacks.summary import RunSummary, metric_protocols

COLUMNS = ["metric", "final", "final_step", "best", "best_step"]


def table_rows(metrics: dict[str, dict]) -> list[list]:
    rows = []
    for name in sorted(metrics):
        e = metrics[name]
        rows.append([name, e.get("final"), e.get("final_step"), e.get("best"), e.get("best_step")])
    return rows


class MetricsTable(pl.Callback):
    def __init__(self, key: str = "final_metrics", prefixes: tuple[str, ...] | list[str] = ("val/", "test/")):
        self.key, self.prefixes = key, tuple(prefixes)

    def _metrics(self, trainer: pl.Trainer) -> dict[str, dict]:
        summary = next((c for c in trainer.callbacks if isinstance(c, RunSummary)), None)
        if summary is not None:
            summary.record(trainer)
            metrics = summary.metrics
        else:  # no summary callback: the last logged values
            metrics = {}
            for name, value in trainer.callback_metrics.items():
                if value.numel() == 1:
                    v = float(value)
                    metrics[name] = {"final": v, "final_step": trainer.global_step, "best": None, "best_step": None}
        return {k: v for k, v in metrics.items() if k.startswith(self.prefixes)}

    def log_table(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        metrics = self._metrics(trainer)
        if not metrics:
            return
        rows = table_rows(metrics)
        protocols = metric_protocols(trainer)
        for logger in loggers:
            logger.log_table(key=self.key, columns=COLUMNS, data=rows)
            run = logger.experiment
            for name, final, _, best, _ in rows:
                if final is not None and math.isfinite(final):
                    run.summary[f"final/{name}"] = final
                if best is not None and math.isfinite(best):
                    run.summary[f"best/{name}"] = best
            if protocols:
                run.config.update({"metric_protocols": protocols}, allow_val_change=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage in ("fit", "validate", "test"):
            self.log_table(trainer)
