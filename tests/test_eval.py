"""`python -m src.eval`: a checkpoint's run rebuilt from its stored config reproduces its validation
metrics; samples and predictions are written; bad checkpoints fail clearly; checkpoints load weights-only."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, run_cli

TINY_GAN = ["trainer.max_epochs=1", "trainer.limit_train_batches=10", "trainer.limit_val_batches=1", "logger=csv",
            "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """A tiny default run (DCGAN on digits, FID / KID / IS on the offline digits backbone)."""
    result = run_cli(TINY_GAN, tmp_path_factory.mktemp("gan") / "run")
    assert result.returncode == 0, result.output[-3000:]
    return result


def test_eval_reproduces_the_runs_validation_metrics_and_writes_samples(gan_run, tmp_path):
    ckpt = gan_run.run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    result = run_cli([f"ckpt_path={ckpt}", "n_samples=6"], out, module="src.eval")
    assert result.returncode == 0, result.output[-3000:]
    assert str(out.resolve()) in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    run = gan_run.summary
    assert summary["status"] == "evaluated" and summary["checkpoint"]["global_step"] == run["global_step"]
    fid_run, fid_eval = run["metrics"]["val/fid"]["final"], summary["metrics"]["val/fid"]["final"]
    assert math.isfinite(fid_run) and math.isclose(fid_eval, fid_run, rel_tol=1e-3)
    reproduced = summary["reproduces"]
    assert {"val/fid", "val/kid", "val/is", "val/mmd", "val/d_loss"} <= set(reproduced)
    assert all(r["rel_diff"] <= 1e-3 for r in reproduced.values()), reproduced
    # the protocol is stored with the numbers, identical in the run and in the evaluation; the reference
    # set is every training digit (dataset.metrics.quality.reference: train; 4500 of them)
    p_run, p_eval = run["metric_protocols"]["quality"], summary["metric_protocols"]["quality"]
    assert p_run["backbone"] == "digits_cnn" and p_run["weights_sha256"] == p_eval["weights_sha256"]
    assert p_run["num_fake"] == 1000 and p_run["reference"] == "train" and p_run["num_real"] == 4500 and p_run["resize"] == "none"
    # samples: one PNG each, a grid and an npz
    assert len(list((out / "samples").glob("*.png"))) == 6 and (out / "samples_grid.png").is_file()
    npz = np.load(out / "samples.npz")
    assert npz["images"].shape == (6, 28, 28, 1) and npz["images"].dtype == np.uint8 and npz["z"].shape == (6, 64)
    # the run's checkpoints load weights-only (plain data) and hold no frozen metric backbone
    for path in (gan_run.run_dir / "checkpoints").glob("*.ckpt"):
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        assert loaded["run_config"]["config"]["model"]["_target_"] == "src.models.gan.GAN"
        assert not any(k.startswith("metrics.") for k in loaded["state_dict"])


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 16)  # a truncated zip, as an interrupted copy leaves
    result = run_cli([f"ckpt_path={bad}"], tmp_path / "eval", module="src.eval")
    assert result.returncode == 2, result.output[-3000:]
    assert "error:" in result.stderr and "bad.ckpt" in result.stderr and "Traceback" not in result.stderr


def test_foreign_and_unsafe_checkpoints_are_refused(tmp_path):
    import argparse

    from src.eval import CheckpointError, check_targets, load_checkpoint

    ckpt = {"state_dict": {"w": torch.zeros(2)}, "global_step": 3, "run_config": {"config": {}, "seed": 0}}
    old = {k: v for k, v in ckpt.items() if k != "run_config"}
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="no run_config"):
        load_checkpoint(tmp_path / "old.ckpt")
    unsafe = dict(ckpt, hyper_parameters=argparse.Namespace(lr=1))  # a pickled object, not plain data
    torch.save(unsafe, tmp_path / "unsafe.ckpt")
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_checkpoint(tmp_path / "unsafe.ckpt")
    with pytest.raises(CheckpointError, match="os.system"):
        check_targets({"model": {"_target_": "os.system", "command": "true"}})
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.ckpt")
    assert load_checkpoint(_save(tmp_path, ckpt))["global_step"] == 3


def _save(tmp_path, ckpt):
    path = tmp_path / "ok.ckpt"
    torch.save(ckpt, path)
    return path


@pytest.mark.slow
def test_classifier_eval_reproduces_accuracy_and_predicts_a_folder(cli, tmp_path):
    from PIL import Image

    from src.data.digits import load_digits_array

    run = cli("experiment=digits_classifier", "trainer.max_epochs=1", "trainer.limit_train_batches=15",
              "logger=csv", "trainer.enable_progress_bar=false")
    assert run.returncode == 0, run.output[-3000:]
    folder = tmp_path / "images"
    folder.mkdir()
    images, labels = load_digits_array()
    for i in range(3):
        Image.fromarray((images[i, 0] * 255).astype(np.uint8)).save(folder / f"digit{i}_{labels[i]}.png")
    best = next((run.run_dir / "checkpoints").glob("best-*.ckpt"))
    out = tmp_path / "eval"
    result = run_cli([f"ckpt_path={best}", f"predict_dir={folder}"], out, module="src.eval")
    assert result.returncode == 0, result.output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reproduces"]["val/acc"]["rel_diff"] == 0.0
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,class,probability" and len(rows) == 4


@pytest.mark.slow
def test_segmentation_eval_reproduces_miou_exactly_and_predicts_masks(cli, tmp_path):
    if not (ROOT / "experiments" / "scenes_supervised.yaml").is_file():
        pytest.skip("no segmentation preset")
    import numpy as np
    from PIL import Image

    run = cli("experiment=scenes_supervised", "trainer.max_steps=4", "trainer.val_check_interval=4",
              "trainer.limit_val_batches=1", "logger=csv", "trainer.enable_progress_bar=false")
    assert run.returncode == 0, run.output[-3000:]
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((64, 80, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "eval"
    result = run_cli([f"ckpt_path={run.run_dir / 'checkpoints' / 'last.ckpt'}", f"predict_dir={folder}"], out,
                     module="src.eval")
    assert result.returncode == 0, result.output[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reproduces"]["val/mIoU"]["rel_diff"] == 0.0
    masks = sorted((out / "predictions").glob("*.png"))
    assert len(masks) == 2 and Image.open(masks[0]).size == (80, 64)
