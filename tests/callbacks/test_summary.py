import json
from types import SimpleNamespace

import torch

from src.callbacks.summary import RunSummary, metric_mode


def test_metric_directions():
    assert metric_mode("val/modes_captured") == "max" and metric_mode("val/mIoU") == "max"
    assert metric_mode("train/d_loss") == "min" and metric_mode("val/fid") == "min"


def test_final_and_best_tracking(tmp_path):
    s = RunSummary(str(tmp_path / "summary.json"), extra={"seed": 0})
    for step, (loss, modes) in enumerate([(3.0, 2), (1.0, 7), (2.0, 5)]):
        trainer = SimpleNamespace(global_step=step, callback_metrics={"val/loss": torch.tensor(loss),
                                                                      "val/modes_captured": torch.tensor(modes)},
                                  is_global_zero=True, current_epoch=0, checkpoint_callback=None)
        s.record(trainer)
    path = s.write(trainer)
    data = json.loads(path.read_text())
    assert data["seed"] == 0
    assert data["metrics"]["val/loss"] == {"mode": "min", "best": 1.0, "best_step": 1, "final": 2.0, "final_step": 2}
    assert data["metrics"]["val/modes_captured"]["best"] == 7.0
