"""The final metrics table sent to wandb (src/callbacks/metrics_table.py) and the protocol record that
src/callbacks/summary.py writes beside the numbers."""
from __future__ import annotations

import json
from types import SimpleNamespace

import torch
from pytorch_lightning.loggers import WandbLogger

from src.callbacks.metrics_table import MetricsTable, table_rows
from src.callbacks.summary import RunSummary, metric_protocols


class FakeRun:
    def __init__(self):
        self.summary, self.config = {}, SimpleNamespace(values={})
        self.config.update = lambda d, allow_val_change=False: self.config.values.update(d)


class FakeWandb(WandbLogger):
    def __init__(self):  # no wandb run: record what would be logged
        self.tables, self._fake = [], FakeRun()

    @property
    def experiment(self):
        return self._fake

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        self.tables.append((key, columns, data))


class Metric(torch.nn.Module):
    protocol = {"backbone": "digits_cnn", "backbone_sha256": "ab" * 32, "num_fake": 1000}


def fake_trainer(tmp_path, loggers):
    module = SimpleNamespace(metrics=torch.nn.ModuleDict({"quality": Metric(), "mmd": torch.nn.Module()}))
    summary = RunSummary(str(tmp_path / "summary.json"))
    trainer = SimpleNamespace(
        is_global_zero=True, sanity_checking=False, loggers=loggers, global_step=7, current_epoch=0,
        callback_metrics={"val/fid": torch.tensor(12.5), "train/d_loss": torch.tensor(0.3)},
        checkpoint_callback=None, strategy=SimpleNamespace(lightning_module=module), callbacks=[summary])
    return trainer, summary


def test_table_of_final_and_best_values_goes_to_wandb(tmp_path):
    logger = FakeWandb()
    trainer, _ = fake_trainer(tmp_path, [logger])
    MetricsTable().teardown(trainer, None, "fit")
    key, columns, data = logger.tables[0]
    assert key == "final_metrics" and columns == ["metric", "final", "final_step", "best", "best_step"]
    assert data == [["val/fid", 12.5, 7, 12.5, 7]], "validation metrics only"
    assert logger.experiment.summary == {"final/val/fid": 12.5, "best/val/fid": 12.5}
    assert logger.experiment.config.values["metric_protocols"]["quality"]["backbone"] == "digits_cnn"


def test_no_wandb_no_table(tmp_path):
    trainer, _ = fake_trainer(tmp_path, [])
    MetricsTable().teardown(trainer, None, "fit")  # nothing to do, no error


def test_summary_json_records_the_metric_protocols(tmp_path):
    trainer, summary = fake_trainer(tmp_path, [])
    assert set(metric_protocols(trainer)) == {"quality"}
    summary.record(trainer)
    data = json.loads(summary.write(trainer).read_text())
    assert data["metric_protocols"]["quality"]["backbone_sha256"] == "ab" * 32
    assert data["metrics"]["val/fid"]["final"] == 12.5
    assert table_rows({"a": {"final": 1.0}})[0][:2] == ["a", 1.0]
