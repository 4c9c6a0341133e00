"""The CLI on a CUDA GPU: the default GAN, the hybrid, the joint game optimizers and DDP with SyncBatchNorm.

Skipped where torch sees no GPU (CI has none); run them on a GPU machine with `pytest tests/test_gpu.py`.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

QUICK = ("logger=csv", "trainer.enable_progress_bar=false", "trainer.max_epochs=-1")


def _params(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")


def test_default_gan_trains_and_evaluates_on_the_gpu(cli):
    run = cli(*QUICK, "trainer=gpu", "trainer.max_steps=40", "trainer.val_check_interval=20",
              "trainer.check_val_every_n_epoch=null")
    assert run.returncode == 0, run.output[-3000:]
    assert run.summary["status"] == "finished"
    assert torch.isfinite(torch.tensor(run.metric("val/fid")))
    ckpt = _params(run.run_dir)
    assert ckpt["global_step"] == 40
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_gpu_runs_are_deterministic_for_the_same_seed(cli):
    """Same seed, same GPU: the same weights (deterministic algorithms on, as trainer.deterministic asks)."""
    args = (*QUICK, "experiment=mlp_ring8", "trainer=gpu", "trainer.max_steps=20", "callbacks.samples=null",
            "trainer.limit_val_batches=1", "trainer.deterministic=true")
    a, b = cli(*args), cli(*args)
    assert a.returncode == 0 and b.returncode == 0, (a.output + b.output)[-3000:]
    sa, sb = _params(a.run_dir)["state_dict"], _params(b.run_dir)["state_dict"]
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("optimizer", ["ncg", "ncg_adam", "cgd", "acgd", "extra_adam", "consensus"])
def test_conjugate_and_game_optimizers_step_on_the_gpu(optimizer, cli):
    extra = ("model.loss=wgan",) if optimizer in ("cgd", "acgd") else ()
    run = cli(*QUICK, "experiment=mlp_grid25", f"optimizer={optimizer}", *extra, "trainer=gpu",
              "trainer.max_steps=20", "callbacks.samples=null", "trainer.limit_val_batches=1")
    assert run.returncode == 0, run.output[-3000:]
    assert run.summary["status"] == "finished"
    assert run.metric("val/modes_captured") >= 0


def test_semi_supervised_hybrid_trains_on_the_gpu(cli):
    run = cli(*QUICK, "experiment=scenes_semi", "trainer=gpu", "trainer.max_steps=12", "model.semi_start=2",
              "trainer.val_check_interval=6", "trainer.limit_val_batches=2", "dataset.num_train=64",
              "dataset.num_val=8")
    assert run.returncode == 0, run.output[-3000:]
    assert 0.0 <= run.metric("val/mIoU") <= 1.0
    assert list((run.run_dir / "overlays").glob("*.png")), "rank 0 logs overlays"


def test_ddp_with_sync_batchnorm_on_one_gpu(cli):
    """trainer=ddp (NCCL) with SyncBatchNorm: the DCGAN's BatchNorm layers are converted and train."""
    run = cli(*QUICK, "trainer=ddp", "trainer.devices=1", "trainer.sync_batchnorm=true", "trainer.max_steps=20",
              "trainer.limit_val_batches=1", "callbacks.samples=null")
    assert run.returncode == 0, run.output[-3000:]
    state = _params(run.run_dir)["state_dict"]
    assert any(k.endswith("running_mean") for k in state), "BatchNorm statistics are saved"
