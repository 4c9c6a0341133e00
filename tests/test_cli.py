"""The CLI as a user runs it: every preset trains (fast_dev_run), bad input fails early and clearly."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from tests.helpers import EXPERIMENTS, ROOT

CSV = "logger=csv"


def _needs_data(experiment: str) -> bool:
    """Presets for datasets read from a local path (VOC, Cityscapes, ...) that a test machine lacks."""
    text = (ROOT / "experiments" / f"{experiment}.yaml").read_text()
    names = [line.split(":", 1)[1].strip() for line in text.splitlines() if "override /dataset:" in line]
    if not names:
        return False
    ds = yaml.safe_load((ROOT / "conf" / "dataset" / f"{names[0]}.yaml").read_text())
    return "root" in ds


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_runs_fast_dev_run(experiment, cli):
    result = cli(f"experiment={experiment}", "debug=fast_dev_run", CSV)
    if _needs_data(experiment):
        # No dataset on this machine: a clear error naming where the data is expected, exit code 2.
        assert result.returncode == 2, result.output[-3000:]
        assert "error:" in result.stderr and "Traceback" not in result.stderr
        return
    assert result.returncode == 0, result.output[-3000:]
    assert "outputs in:" in result.stdout
    assert result.summary["status"] == "finished"


def test_default_run_leaves_everything_in_its_output_dir(cli):
    """Config + choices + overrides, checkpoints (last, best), sample PNGs, CSV, wandb (offline), summary."""
    result = cli("trainer.max_epochs=2", "trainer.limit_train_batches=8", "trainer.limit_val_batches=1")
    assert result.returncode == 0, result.output[-3000:]
    d = result.run_dir
    assert (d / ".hydra" / "config.yaml").is_file() and (d / ".hydra" / "overrides.yaml").is_file()
    assert "choices" in (d / ".hydra" / "hydra.yaml").read_text()
    assert (d / "config_resolved.yaml").is_file()
    assert (d / "checkpoints" / "last.ckpt").is_file()
    assert list((d / "checkpoints").glob("best-*.ckpt"))
    assert len(list((d / "samples").glob("*.png"))) == 2
    assert (d / "csv" / "metrics.csv").is_file()
    assert list((d / "wandb").glob("offline-run-*")), "wandb runs offline without an account"
    s = result.summary
    assert s["seed"] == 0 and s["choices"]["model"] == "gan_dcgan" and s["output_dir"] == str(d.resolve())
    for name in ("train/d_loss", "train/g_loss", "val/mmd", "grad_norm/generator", "lr/discriminator"):
        assert {"final", "best"} <= set(s["metrics"][name])
    assert str(d.resolve()) in result.stdout


def test_every_output_counts_the_same_steps(cli):
    """csv/metrics.csv, wandb, summary.json, checkpoint and sample names all count iterations: 2 epochs of 6
    batches, validation after each, logs every 2nd iteration."""
    import csv

    from tests.helpers import wandb_history

    result = cli("trainer.max_epochs=2", "trainer.limit_train_batches=6", "trainer.limit_val_batches=1",
                 "trainer.log_every_n_steps=2", "model.num_eval_samples=64")
    assert result.returncode == 0, result.output[-3000:]
    d, train_steps, val_steps = result.run_dir, {2, 4, 6, 8, 10, 12}, {6, 12}
    with open(d / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {int(r["step"]) for r in rows if r.get("train/d_loss")} == train_steps
    assert {int(r["step"]) for r in rows if r.get("val/fid")} == val_steps
    assert {int(r["step"]) for r in rows} <= train_steps | val_steps
    history = wandb_history(d)
    assert {r["trainer/global_step"] for r in history if "train/d_loss" in r} == train_steps
    assert {r["trainer/global_step"] for r in history if "val/fid" in r} == val_steps
    assert {r["trainer/global_step"] for r in history} <= train_steps | val_steps
    s = result.summary
    assert s["global_step"] == 12 and s["metrics"]["val/fid"]["final_step"] == 12
    assert s["metrics"]["val/fid"]["best_step"] in val_steps and s["metrics"]["train/d_loss"]["final_step"] == 12
    best = torch.load(next((d / "checkpoints").glob("best-*.ckpt")), weights_only=True)
    assert {p.name for p in (d / "checkpoints").glob("best-*.ckpt")} == {f"best-{best['global_step']}.ckpt"}
    assert best["global_step"] == s["metrics"]["val/fid"]["best_step"]
    assert torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    assert sorted(p.name for p in (d / "samples").glob("*.png")) == ["samples_step0000006.png",
                                                                     "samples_step0000012.png"]


def test_output_dirs_never_collide(tmp_path):
    """Two runs started in the same second get different directories (microseconds + pid)."""
    from tests.helpers import compose

    cfg = compose([])
    pattern = cfg.hydra.run.dir if "hydra" in cfg else None
    text = (ROOT / "conf" / "hydra" / "default.yaml").read_text()
    assert "%f" in text and "run_suffix" in text
    assert pattern is None or "%f" in str(pattern)


# --------------------------------------------------------------------------------------- bad input
def test_unknown_group_option_lists_the_valid_ones(cli):
    result = cli("optimizer=nope", CSV)
    assert result.returncode != 0
    assert "optimizer" in result.output and "adam" in result.output and "sgd" in result.output


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=-0.1", "optimizer.lr"),
    ("model.n_critic=0", "model.n_critic"),
    ("model.loss=nope", "model.loss"),
    ("dataset.batch_size=abc", "dataset.batch_size"),
    ("seed=-3", "seed"),
    ("optimizer.players.generator.lr=0", "optimizer.players.generator.lr"),
])
def test_bad_values_are_rejected_before_training_naming_the_key(override, key, cli):
    result = cli(override, CSV)
    assert result.returncode == 2, result.output[-3000:]
    assert key in result.stderr
    assert "Traceback" not in result.stderr
    assert not (result.run_dir / "checkpoints").exists(), "nothing trained"


def test_unknown_player_override_is_rejected(cli):
    result = cli("optimizer.players.critic.lr=0.1", CSV)
    assert result.returncode == 2 and "critic" in result.stderr


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_checkpoint(cli):
    result = cli("experiment=mlp_ring8", "optimizer=sgd", "optimizer.lr=3", "trainer.max_steps=200",
                 "callbacks.last_checkpoint.every_n_train_steps=1", CSV)
    assert result.returncode == 2, result.output[-3000:]
    assert "non-finite" in result.stderr and "last.ckpt) is intact" in result.stderr
    ckpt = torch.load(result.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert result.summary["status"].startswith("failed: DivergenceError")


def test_missing_checkpoint_is_a_clear_error(cli, tmp_path):
    result = cli(f"ckpt_path={tmp_path / 'nope.ckpt'}", CSV)
    assert result.returncode == 2 and "nope.ckpt" in result.stderr


def test_seed_zero_is_a_seed_and_runs_are_reproducible(cli):
    args = ("experiment=mlp_ring8", "trainer.max_steps=20", CSV)
    a, b, c = cli(*args, "seed=0"), cli(*args, "seed=0"), cli(*args, "seed=1")
    assert a.returncode == b.returncode == c.returncode == 0
    sa = torch.load(a.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    sb = torch.load(b.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    sc = torch.load(c.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert a.summary["seed"] == 0 and math.isfinite(a.metric("val/modes_captured"))
