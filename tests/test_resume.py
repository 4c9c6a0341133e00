"""Exact resume: 2N steps in one go == N steps + resume + N steps, bitwise on CPU."""
from __future__ import annotations

import json

import pytest
import torch

FAST = ("trainer.limit_val_batches=1", "model.num_eval_samples=100", "trainer.enable_progress_bar=false")


def _weights(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt


def _assert_same(a, b):
    sa, sb = a["state_dict"], b["state_dict"]
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"weights differ after resume: {diff[:5]}"
    (oa,), (ob,) = a["optimizer_states"], b["optimizer_states"]  # one optimizer for Lightning: every player's
    assert oa["optimizers"].keys() == ob["optimizers"].keys()
    for player in oa["optimizers"]:
        for pa, pb in zip(oa["optimizers"][player]["state"].values(), ob["optimizers"][player]["state"].values()):
            for key in pa:
                if isinstance(pa[key], torch.Tensor):
                    assert torch.equal(pa[key], pb[key]), f"{player}'s optimizer state {key} differs"


def test_dcgan_resume_mid_epoch_is_bitwise_identical_and_keeps_config_and_wandb_run(cli):
    # 2N = 14 iterations, stopping mid-epoch; the run uses a non-default loss and the resumed command does
    # not repeat it: the original config comes back with the checkpoint.
    common = ("model.loss=hinge", "trainer.max_epochs=-1", *FAST)
    full = cli(*common, "trainer.max_steps=14")
    half = cli(*common, "trainer.max_steps=7")
    assert full.returncode == 0 and half.returncode == 0, full.output[-2000:] + half.output[-2000:]
    resumed = cli(f"ckpt_path={half.run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=14")
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.run_dir == half.run_dir, "a resume writes into the run it continues"
    _assert_same(_weights(full.run_dir), _weights(resumed.run_dir))
    assert _weights(resumed.run_dir)["global_step"] == 14
    assert resumed.summary["resumed_from"].endswith("last.ckpt")
    assert "loss: hinge" in (resumed.run_dir / "config_resolved.yaml").read_text()
    original = json.loads((half.run_dir / "run.json").read_text())["wandb_id"]
    assert json.loads((resumed.run_dir / "run.json").read_text())["wandb_id"] == original


def test_mixture_resume_across_an_epoch_boundary(cli):
    common = ("experiment=mlp_grid25", "dataset.num_train=2560", "logger=csv", "trainer.max_epochs=-1", *FAST)
    # 10 batches per epoch: stop after 13 iterations, resume to 34.
    full = cli(*common, "trainer.max_steps=34")
    half = cli(*common, "trainer.max_steps=13")
    resumed = cli(f"ckpt_path={half.run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=34")
    assert full.returncode == half.returncode == resumed.returncode == 0, resumed.output[-3000:]
    _assert_same(_weights(full.run_dir), _weights(resumed.run_dir))


def test_resume_refuses_to_change_a_config_group(cli):
    half = cli("experiment=mlp_ring8", "logger=csv", "trainer.max_steps=4", *FAST)
    assert half.returncode == 0
    bad = cli(f"ckpt_path={half.run_dir / 'checkpoints' / 'last.ckpt'}", "optimizer=sgd", "logger=csv")
    assert bad.returncode == 2 and "optimizer=sgd" in bad.stderr


def test_resume_is_bitwise_with_ema_and_diffaugment_on(cli):
    common = ("model.ema_decay=0.9", "model.ema_start=2", "model.diffaugment=[color,translation,cutout]",
              "trainer.max_epochs=-1", "logger=csv", *FAST)
    full = cli(*common, "trainer.max_steps=8")
    half = cli(*common, "trainer.max_steps=3")
    resumed = cli(f"ckpt_path={half.run_dir / 'checkpoints' / 'last.ckpt'}", "trainer.max_steps=8")
    assert full.returncode == half.returncode == resumed.returncode == 0, resumed.output[-3000:]
    a, b = _weights(full.run_dir), _weights(resumed.run_dir)
    assert any(k.startswith("generator_ema.") for k in a["state_dict"]), "the EMA generator is checkpointed"
    _assert_same(a, b)


def test_a_failed_run_resumed_holds_its_whole_curve_once_in_csv_and_wandb_and_keeps_its_groups(cli):
    """Failed at iteration 10 with last.ckpt at 8, resumed to 14: csv/metrics.csv and the wandb run have
    every iteration 1..14 exactly once; summary.json and run.json report the groups of the run (logger=
    all here) and its epoch count is that of a run never interrupted."""
    import csv

    from tests.helpers import wandb_history

    common = ("logger=all", "experiment=mlp_ring8", "trainer.log_every_n_steps=1", "trainer.limit_val_batches=0",
              "callbacks.last_checkpoint.every_n_train_steps=4", "dataset.num_train=2560", "trainer.max_epochs=-1",
              "trainer.enable_progress_bar=false", "validate_after_fit=false")
    crashed = cli(*common, "trainer.max_steps=14", "+callbacks.fail._target_=tests.helpers.FailAt",
                  "+callbacks.fail.step=10")
    assert crashed.returncode != 0
    assert torch.load(crashed.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    resumed = cli(f"ckpt_path={crashed.run_dir / 'checkpoints' / 'last.ckpt'}", "++callbacks.fail=null")
    assert resumed.returncode == 0, resumed.output[-3000:]
    assert resumed.run_dir == crashed.run_dir
    with open(resumed.run_dir / "csv" / "metrics.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r.get("train/d_loss")]
    assert steps == list(range(1, 15)), steps
    wandb_steps = [r["trainer/global_step"] for r in wandb_history(resumed.run_dir) if "train/d_loss" in r]
    assert wandb_steps == list(range(1, 15)), wandb_steps
    assert resumed.summary["choices"]["logger"] == "all" and resumed.summary["status"] == "finished"
    assert json.loads((resumed.run_dir / "run.json").read_text())["choices"]["logger"] == "all"
    straight = cli(*common, "trainer.max_steps=14")
    assert resumed.summary["epoch"] == straight.summary["epoch"] and resumed.summary["global_step"] == 14
