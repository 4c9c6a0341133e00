"""benchmarks/framework_overhead.py: the plain loop uses the config's optimizer, schedule, loss and EMA."""
from __future__ import annotations

import torch

from benchmarks import framework_overhead as fo
from src.optim.ncg_adam import NCGAdam


def test_the_plain_loop_builds_what_the_preset_configures(tmp_path):
    cfg = fo.compose(["experiment=mlp_grid25_fast", *fo.QUIET], tmp_path)
    net = torch.nn.Linear(2, 2)
    opt = fo._optimizer(net.parameters(), cfg.optimizer)
    assert isinstance(opt, NCGAdam) and opt.defaults["lr"] == cfg.optimizer.lr
    schedule = fo._scheduler(opt, cfg.optimizer, 40)
    assert isinstance(schedule, torch.optim.lr_scheduler.PolynomialLR) and schedule.total_iters == 40
    assert fo._scheduler(opt, fo.compose(["experiment=mlp_grid25"], tmp_path / "b").optimizer, 40) is None
    assert fo.plain_gan(cfg, batches=3, warmup=1) > 0


def test_the_progress_bar_is_measured_as_users_see_it():
    assert not any(arg.startswith("trainer.enable_progress_bar") for arg in fo.QUIET)
