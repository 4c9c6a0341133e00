"""`.env` handling: it is read, wandb is offline without an account, secrets never reach files."""
from __future__ import annotations

import pytest

from tests.helpers import clean_env, run_cli

SECRET = "wandb-secret-0123456789abcdef0123456789abcdef"


@pytest.mark.slow
def test_dotenv_is_loaded_and_the_api_key_never_reaches_a_saved_file(tmp_path):
    cwd = tmp_path / "project"
    cwd.mkdir()
    (cwd / ".env").write_text(f"WANDB_API_KEY={SECRET}\nWANDB_PROJECT=from-dotenv\nWANDB_MODE=offline\n")
    run_dir = tmp_path / "run"
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "src.run", "trainer.max_steps=4", "trainer.limit_val_batches=1",
                           "model.num_eval_samples=50", f"hydra.run.dir={run_dir}"],
                          cwd=cwd, env=clean_env(PYTHONPATH=str(__import__("tests.helpers").helpers.ROOT)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr
    assert "project: from-dotenv" in (run_dir / "config_resolved.yaml").read_text()
    leaked = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaked, f"secret found in {leaked}"


def test_wandb_mode_disabled_writes_no_wandb_run(cli):
    result = cli("trainer.max_steps=2", "trainer.limit_val_batches=1", "model.num_eval_samples=50",
                 env=clean_env(WANDB_MODE="disabled"))
    assert result.returncode == 0, result.output[-2000:]
    assert not list((result.run_dir / "wandb").glob("offline-run-*"))


def test_env_example_lists_every_variable_the_project_reads():
    """Every environment variable read by src/ and conf/ is in .env.example, except those that launchers and
    libraries set for themselves (process ranks, Lightning's CUDA-probe switch)."""
    import re

    from tests.helpers import ROOT

    set_by_others = {"LOCAL_RANK", "RANK", "SLURM_PROCID", "PYTORCH_NVML_BASED_CUDA_CHECK"}
    read = set()
    for path in [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("conf").rglob("*.yaml")]:
        text = path.read_text()
        read |= set(re.findall(r"oc\.env:([A-Z_]+)", text))
        read |= set(re.findall(r"environ(?:\.get|\.setdefault)?\(\s*\"([A-Z_]+)\"", text))
        read |= set(re.findall(r"environ\[\"([A-Z_]+)\"\]", text))
    from src.utils.env import SECRET_VARIABLES

    read |= set(SECRET_VARIABLES)
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert "PROJECT_ROOT" in read and "CACHE_DIR" in read
    assert read - set_by_others <= listed, sorted(read - set_by_others - listed)
