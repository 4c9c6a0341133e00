"""SIGTERM mid-run writes a checkpoint; resuming from it reaches the uninterrupted run's weights."""
from __future__ import annotations

import json
import signal
import time

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel

from src.callbacks.preemption import GracefulShutdown

from tests.helpers import start_until_checkpoint

ARGS = ["logger=csv", "trainer.max_epochs=-1", "trainer.max_steps=60", "trainer.limit_val_batches=1",
        "model.num_eval_samples=50", "trainer.enable_progress_bar=false", "model.metrics={}"]


def _start_until_first_checkpoint(python_args: list[str], run_dir):
    """Start `python PYTHON_ARGS ARGS` (a run writing last.ckpt every 2 steps); return once it wrote one."""
    return start_until_checkpoint([*python_args, *ARGS, "callbacks.last_checkpoint.every_n_train_steps=2"], run_dir)


@pytest.mark.slow
def test_sigterm_checkpoints_and_resume_matches_uninterrupted_run(cli, tmp_path):
    full = cli(*ARGS)
    assert full.returncode == 0, full.output[-3000:]

    run_dir = tmp_path / "interrupted"
    proc, ckpt = _start_until_first_checkpoint(["-m", "src.run"], run_dir)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:] + err[-3000:]
    assert "SIGTERM received" in err
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert 0 < step < 60

    resumed = cli(f"ckpt_path={ckpt}")
    assert resumed.returncode == 0, resumed.output[-3000:]
    a = torch.load(full.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(resumed.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


REQUEUE_SCRIPT = """
import runpy, signal, sys
def requeue(signum, frame):  # stands in for submitit's SignalHandler.checkpoint_and_try_requeue
    open(MARKER, "w").write(signal.Signals(signum).name)
    sys.exit(99)
signal.signal(signal.SIGUSR2, requeue)
runpy.run_module("src.run", run_name="__main__")
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_sigusr2_checkpoints_then_hands_over_to_the_requeue_handler(tmp_path):
    """SLURM's time-limit warning (USR2 with the submitit presets): the step finishes, last.ckpt is written,
    then the handler installed before the run (submitit's requeue) gets the signal."""
    marker, run_dir = tmp_path / "requeued", tmp_path / "run"
    script = REQUEUE_SCRIPT.replace("MARKER", repr(str(marker)))
    proc, ckpt = _start_until_first_checkpoint(["-c", script], run_dir)
    first = torch.load(ckpt, weights_only=True)["global_step"] if ckpt.exists() else None
    time.sleep(1.0)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 99, out[-2000:] + err[-3000:]
    assert marker.read_text() == "SIGUSR2", "the requeue handler got the signal"
    assert "SIGUSR2 received" in err
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert first is not None and first <= step < 60, "the checkpoint holds the step the signal stopped at"
    status = json.loads((run_dir / "summary.json").read_text())["status"]
    assert status.startswith("interrupted"), status


class _RecordHandler(pl.Callback):
    def __init__(self):
        self.seen = set()

    def on_train_batch_end(self, *args) -> None:
        self.seen.add(signal.getsignal(signal.SIGTERM))


def _fit(callbacks, model) -> None:
    trainer = pl.Trainer(max_steps=3, limit_val_batches=1, num_sanity_val_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks)
    trainer.fit(model)


class _Failing(BoringModel):
    def training_step(self, batch, batch_idx):
        if batch_idx == 1:
            raise ValueError("boom")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("model", [BoringModel, _Failing])
def test_only_our_handler_is_active_in_training_and_the_previous_one_is_back_after(model, tmp_path):
    """Lightning registers a SIGTERM handler after on_fit_start whose DDP branch runs a broadcast inside the
    handler (it hung a 2-rank run in CI): training runs under GracefulShutdown's handler alone, and the
    handler from before the fit is back afterwards, also when training raised."""
    def before(signum, frame):
        pass

    old = signal.signal(signal.SIGTERM, before)
    try:
        shutdown, record = GracefulShutdown(str(tmp_path)), _RecordHandler()
        if model is _Failing:
            with pytest.raises(ValueError, match="boom"):
                _fit([shutdown, record], model())
        else:
            _fit([shutdown, record], model())
        assert record.seen == {shutdown._handler}
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, old)


@pytest.mark.slow
def test_sigterm_in_the_final_validation_exits_143_and_records_interrupted(cli):
    """Outside the training steps Lightning's own handler acts (its SIGTERMException is a SystemExit that
    would exit 0): the run still exits 128 + 15, says how to resume, and summary.json says interrupted."""
    run = cli(*ARGS, "trainer.max_steps=3", "trainer.limit_val_batches=3", "validate_after_fit=true",
              "+callbacks.sigterm._target_=tests.helpers.SigtermInStandaloneValidation")
    assert run.returncode == 128 + signal.SIGTERM, run.output[-3000:]
    assert "SIGTERM received at step 3 outside the training steps" in run.output
    assert "ckpt_path=" in run.output
    status = json.loads((run.run_dir / "summary.json").read_text())["status"]
    assert status.startswith("interrupted"), status
