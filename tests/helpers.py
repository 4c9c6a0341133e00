"""Test helpers: run the CLI as a user would, compose configs as the CLI does."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a new user: no wandb account, no data dir, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "DATA_DIR", "OUTPUT_DIR"))}
    env.update({"PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


class RunResult:
    def __init__(self, proc: subprocess.CompletedProcess, run_dir: Path):
        self.proc, self.run_dir = proc, run_dir
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def summary(self) -> dict:
        return json.loads((self.run_dir / "summary.json").read_text())

    def metric(self, name: str, which: str = "final") -> float:
        return self.summary["metrics"][name][which]


def resumed_run(args: list[str]) -> Path | None:
    """The run directory a `ckpt_path=<run>/checkpoints/x.ckpt` argument continues, if any."""
    for arg in args:
        if arg.startswith("ckpt_path="):
            run = Path(arg.split("=", 1)[1]).resolve().parent.parent
            return run if (run / ".hydra" / "config.yaml").is_file() else None
    return None


def run_cli(args: list[str], run_dir: Path, env: dict | None = None, timeout: int = 600,
            module: str = "src.run", cwd: Path = ROOT) -> RunResult:
    """`python -m src.run ARGS hydra.run.dir=RUN_DIR` in a fresh process; a resume (ckpt_path=...) runs in
    the run it continues, as it does for a user."""
    resumed = resumed_run(args) if module == "src.run" else None
    run_dir = resumed or run_dir
    cmd = [sys.executable, "-m", module, *args, *([] if resumed else [f"hydra.run.dir={run_dir}"])]
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)
    return RunResult(proc, Path(run_dir))


def start_until_checkpoint(python_args: list[str], run_dir: Path, timeout: float = 300):
    """Start `python PYTHON_ARGS hydra.run.dir=RUN_DIR` (a run that writes checkpoints/last.ckpt) in the
    background; return (the process, the checkpoint path) once the checkpoint exists or the run ended."""
    proc = subprocess.Popen([sys.executable, *python_args, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    deadline = time.time() + timeout
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return proc, ckpt


def compose(overrides: list[str] | None = None, output_dir: Path | str = "/tmp/advtrain-test"):
    """The config `python -m src.run OVERRIDES` would get, with paths.output_dir set to `output_dir`
    and the Hydra node removed (so it resolves outside a Hydra run)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from src.utils.cli import normalise_argv
    from src.utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=normalise_argv(list(overrides or [])))
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def wandb_history(run_dir: Path) -> list[dict]:
    """The history rows of the offline wandb run(s) under `run_dir` (a resumed run adds a second offline
    directory of the same run), read from their .wandb files (a log of length-prefixed protobuf records in
    32 KiB blocks, after a 7-byte header), in the order they were written."""
    rows = []
    for path in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        rows += _wandb_file_history(path)
    return rows


def _wandb_file_history(path: Path) -> list[dict]:
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, pending, rows = path.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B", "not a wandb transaction log"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind not in (1, 4):  # 1: a whole record, 2/3/4: its first, middle and last fragments
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


class SigtermInStandaloneValidation(pl.Callback):
    """Test-only callback (`+callbacks.x._target_=tests.helpers.SigtermInStandaloneValidation`): the process
    sends itself SIGTERM in the first batch of a `trainer.validate` (the run's final validation)."""

    def __init__(self):
        self.sent = False

    def on_validation_batch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.state.fn == "validate" and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


class FailAt(pl.Callback):
    """Test-only callback (`+callbacks.fail._target_=tests.helpers.FailAt +callbacks.fail.step=N`): training fails
    with an error at the end of iteration N (after what it logged, before any new checkpoint)."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"test failure at iteration {self.step}")
