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
    result = cli("trainer.max_epochs=2", "trainer.check_val_every_n_epoch=1", "trainer.limit_train_batches=8",
                 "trainer.limit_val_batches=1")
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
                 "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=2", "model.num_eval_samples=64")
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


# ------------------------------------------------------------------------------- what a run prints
NOISE = ("💡 Tip", "LeafSpec", "FLOPs", "anonymous setting", "could not find the monitored key", "v_num",
         "Trainer already configured", "smaller than the logging interval", "Epoch 0/-2")


def test_a_run_ends_with_its_headline_numbers_and_without_library_noise(cli):
    result = cli("trainer.max_steps=6", "trainer.max_epochs=-1", "trainer.limit_val_batches=1",
                 "callbacks.last_checkpoint.every_n_train_steps=2", "model.num_eval_samples=64")
    assert result.returncode == 0, result.output[-3000:]
    tail = result.stdout.split("run finished:", 1)[1]
    assert "6 iterations" in tail.splitlines()[0]
    table = tail.split("outputs in:")[0]
    fid = result.summary["metrics"]["val/fid"]
    assert f"val/fid (monitored, min)" in table and f"{fid['final']:.4g}" in table
    for name in ("val/kid", "val/is", "val/mmd"):
        assert name in table, name
    assert str(result.run_dir.resolve()) in tail
    for noise in NOISE:
        assert noise not in result.output, noise


def test_paths_output_dir_puts_the_whole_run_there(cli, tmp_path):
    import subprocess
    import sys

    from tests.helpers import ROOT, clean_env

    target = tmp_path / "elsewhere" / "my_run"
    logs = tmp_path / "logs"
    proc = subprocess.run([sys.executable, "-m", "src.run", f"paths.output_dir={target}", f"paths.log_dir={logs}",
                           "debug=fast_dev_run", "logger=csv"], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "run.log", "summary.json", "config_resolved.yaml"):
        assert (target / name).is_file(), name
    assert not logs.exists() or not any(logs.rglob("*")), "nothing of the run elsewhere"


@pytest.mark.parametrize("kind", ["random", "text", "empty", "truncated", "other_model"])
def test_a_bad_checkpoint_fails_in_one_line_before_any_run_dir_exists(kind, cli, tmp_path):
    import os

    good = cli("trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.max_epochs=-1", CSV,
               "model.num_eval_samples=50")
    assert good.returncode == 0, good.output[-2000:]
    ckpt = tmp_path / f"{kind}.ckpt"
    blob = (good.run_dir / "checkpoints" / "last.ckpt").read_bytes()
    ckpt.write_bytes({"random": os.urandom(4096), "text": b"not a checkpoint\n", "empty": b"",
                      "truncated": blob[: len(blob) // 2], "other_model": blob}[kind])
    extra = ["model=gan_mlp", "dataset=ring8"] if kind == "other_model" else []
    bad = cli(f"ckpt_path={ckpt}", *extra, CSV)
    assert bad.returncode == 2, bad.output[-3000:]
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ckpt_path:") and str(ckpt) in lines[0], bad.stderr
    if kind == "other_model":
        assert "model=gan_dcgan" in lines[0] and "model=gan_mlp" in lines[0]
    assert "Traceback" not in bad.output
    assert not bad.run_dir.exists(), "no run directory for a checkpoint that cannot be used"
    assert not list(tmp_path.glob("**/offline-run-*")), "no wandb run either"


def test_a_model_and_a_dataset_that_do_not_fit_fail_before_training_naming_both(cli):
    result = cli("model=segmentation_unet", CSV)
    assert result.returncode == 2, result.output[-3000:]
    assert "model=segmentation_unet" in result.stderr and "dataset=digits" in result.stderr
    assert "scenes" in result.stderr and "Traceback" not in result.output
    assert not (result.run_dir / "checkpoints").exists()


def test_test_after_fit_needs_a_test_split_and_says_so_before_training(cli):
    result = cli("test_after_fit=true", CSV)
    assert result.returncode == 2, result.output[-3000:]
    assert "has no test split" in result.stderr and "Traceback" not in result.output
    assert not (result.run_dir / "checkpoints").exists()


def test_a_divergence_before_any_checkpoint_says_so_and_is_in_run_log(cli):
    result = cli("experiment=mlp_ring8", "optimizer=sgd", "optimizer.lr=3", "trainer.max_steps=200", CSV)
    assert result.returncode == 2, result.output[-3000:]
    assert "No checkpoint had been written yet" in result.stderr and "is intact" not in result.stderr
    assert "non-finite" in (result.run_dir / "run.log").read_text()


def test_cifar10_naganuma_iiduka_preset_trains_on_fixture_data_and_sweeps_their_grid(cli, tmp_path):
    from tests.data.test_image_datasets import write_cifar

    write_cifar(tmp_path / "cifar")
    small = ["model.generator.base_width=8", "model.discriminator.base_width=8", "model.num_eval_samples=16",
             "dataset.num_val=10", "dataset.batch_size=8", "trainer.max_steps=2", "trainer.val_check_interval=2",
             "dataset.meta.metrics.quality.which=[fid]", f"paths.cache_dir={tmp_path / 'cache'}"]
    result = cli("experiment=cifar10_sngan_ncg", f"dataset.root={tmp_path / 'cifar'}", *small, CSV)
    assert result.returncode == 0, result.output[-3000:]
    s = result.summary
    assert s["choices"]["optimizer"] == "ncg" and s["global_step"] == 2 and "val/fid" in s["metrics"]
    protocol = s["metric_protocols"]["quality"]
    assert protocol["num_fake"] == 16 and protocol["reference"] == "train"
    swept = yaml.safe_load((ROOT / "experiments" / "cifar10_sngan_ncg.yaml").read_text())["hydra"]["sweeper"]["params"]
    grid = [5e-3, 1e-3, 5e-4, 1e-4, 5e-5]
    assert [float(v) for v in swept["optimizer.lr"].split(",")] == grid
    assert [float(v) for v in swept["optimizer.players.discriminator.lr"].split(",")] == grid
