"""A short grid25 run captures more modes than the untrained generator."""
from __future__ import annotations

import torch

from src.metrics.mode_coverage import ModeCoverage
from src.train import build_model
from tests.helpers import compose


def test_short_grid25_run_captures_more_modes_than_the_untrained_generator(cli, tmp_path):
    cfg = compose(["+experiment=mlp_grid25"], output_dir=tmp_path)
    untrained = build_model(cfg)
    metric = ModeCoverage(mixture="grid25", std=0.05)
    metric.update(untrained.sample_fixed(2500), real=False)
    before = float(metric.compute()["modes_captured"])

    result = cli("+experiment=mlp_grid25", "trainer.max_epochs=6", "logger=csv", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.output[-3000:]
    after = result.metric("val/modes_captured", "best")
    assert after > before + 3, (before, after)
    assert list((result.run_dir / "samples").glob("*.png")), "scatter plots of samples over the mode centres"
