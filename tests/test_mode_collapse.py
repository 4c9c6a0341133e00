"""The mode-collapse benchmark (benchmarks/mode_collapse.py): a short grid25 run captures more modes than the
untrained generator; its cells are CLI commands of the presets, reused only at the same resolved config."""
from __future__ import annotations

import torch

from benchmarks import mode_collapse as bench
from src.metrics.mode_coverage import ModeCoverage
from src.train import build_model
from tests.helpers import compose


def test_short_grid25_run_captures_more_modes_than_the_untrained_generator(cli, tmp_path):
    cfg = compose(["experiment=mlp_grid25"], output_dir=tmp_path)
    untrained = build_model(cfg)
    metric = ModeCoverage(mixture="grid25", std=0.05)
    metric.update(untrained.sample_fixed(2500), real=False)
    before = float(metric.compute()["modes_captured"])

    result = cli("experiment=mlp_grid25", "trainer.max_epochs=6", "logger=csv", "trainer.enable_progress_bar=false")
    assert result.returncode == 0, result.output[-3000:]
    after = result.metric("val/modes_captured", "best")
    assert after > before + 3, (before, after)
    assert list((result.run_dir / "samples").glob("*.png")), "scatter plots of samples over the mode centres"


def test_benchmark_cells_are_cli_commands_of_the_presets():
    """The mode-collapse benchmark's cells: the preset, the optimizer at its own lr, the budget in
    iterations (one generator update each), the zero-sum loss for CGD/ACGD, and a schedule over the run."""
    sgd = bench.optimizer_facts("sgd")
    assert (sgd["lr"], sgd["joint"], sgd["loss"]) == (compose(["optimizer=sgd"]).optimizer.lr, False, "ns")
    assert bench.cell_overrides("ring8", "sgd", 3, 100, sgd, "wgan") == [
        "experiment=mlp_ring8", "optimizer=sgd", "seed=3", "trainer.max_steps=100"]
    acgd = bench.optimizer_facts("acgd")
    assert acgd["joint"] and acgd["zero_sum"]
    assert bench.cell_overrides("grid25", "acgd", 0, 100, acgd, "wgan") == [
        "experiment=mlp_grid25", "optimizer=acgd", "seed=0", "trainer.max_steps=100", "model.loss=wgan"]
    long = bench.optimizer_facts("adam", "mlp_grid25_long", ("model.loss=ns",))
    assert (long["lr"], long["batch"], long["loss"], long["schedule_length"]) == (1e-3, 256, "ns", True)
    assert bench.cell_overrides("grid25", "adam", 1, 500, long, "wgan", "mlp_grid25_long", ("model.loss=ns",)) == [
        "experiment=mlp_grid25_long", "optimizer=adam", "seed=1", "trainer.max_steps=500", "model.loss=ns"]


def test_a_cell_is_reused_only_while_its_resolved_config_is_the_same(tmp_path, monkeypatch):
    """The same overrides name another run once a preset file changes (modelled here by an extra base
    override): the finished cell is then trained again, not reused."""
    task = {"dir": str(tmp_path / "cell"), "fresh": False, "dataset": "ring8", "optimizer": "adam", "seed": 0,
            "budget": 4, "overrides": ["experiment=mlp_ring8", "optimizer=adam", "seed=0", "trainer.max_steps=4",
                                       "model.num_eval_samples=100"]}
    first = bench.run_cell(task)
    assert first["status"] == "finished" and not first["reused"]
    assert bench.run_cell(task)["reused"]
    monkeypatch.setattr(bench, "BASE_OVERRIDES", bench.BASE_OVERRIDES + ["model.ema_decay=0.9"])
    again = bench.run_cell(task)
    assert not again["reused"] and again["config"] != first["config"]


def test_the_untrained_row_is_the_same_on_every_call():
    first = bench.untrained("grid25", 3)
    torch.rand(17)  # whatever ran before
    assert bench.untrained("grid25", 3) == first
