"""Sweeps as a user runs them: `python -m src.run -m ...` with the basic, Optuna, joblib and submitit
(local and SLURM) plugins. Each job gets its own directory and summary.json, a failed job never stops a
sweep, a re-run sweep skips what finished, and the sweep leaves one table of its jobs (results.md)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import CONF, ROOT, clean_env

TINY = ("experiment=mlp_ring8", "trainer.max_steps=4", "logger=csv", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "callbacks.samples=null")


def sweep(args: list[str], sweep_dir: Path | None, env: dict | None = None, timeout: int = 600,
          multirun: bool = True) -> subprocess.CompletedProcess:
    """`python -m src.run [-m] ARGS hydra.sweep.dir=SWEEP_DIR` in a fresh process (SWEEP_DIR None: the
    default sweep directory; pass paths.log_dir in ARGS)."""
    where = [f"hydra.sweep.dir={sweep_dir}"] if sweep_dir is not None else []
    cmd = [sys.executable, "-m", "src.run", *(["-m"] if multirun else []), *args, *where]
    proc = subprocess.run(cmd, cwd=ROOT, env=env or clean_env(), capture_output=True, text=True, timeout=timeout)
    proc.output = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def summaries(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def table_rows(sweep_dir: Path) -> list[str]:
    """The job rows of <sweep_dir>/results.md (the first table)."""
    text = (sweep_dir / "results.md").read_text()
    first = text.split("\n\n## ", 2)[1] if "\n\n## " in text else text
    return [line for line in first.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]


def hydra_node(overrides: list[str], key: str):
    """`key` of the config `python -m src.run OVERRIDES` composes (hydra node included), resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from src.utils.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves
    try:
        node = OmegaConf.select(cfg, key)
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    finally:
        HydraConfig.instance().cfg = None  # other tests in this process must not see a Hydra run


def needs(plugin: str) -> None:
    pytest.importorskip(f"hydra_plugins.{plugin}", reason=f"{plugin} is in the 'sweeps' extra: pip install -e '.[sweeps]'")


# ------------------------------------------------------------------------------------ composition
def test_slurm_gpu_preset_takes_gpus_and_nodes_from_the_trainer():
    needs("hydra_submitit_launcher")
    args = ["+launcher=slurm_gpu", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2", "hydra.launcher.partition=gpu"]
    launcher = hydra_node(args, "hydra.launcher")
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["gpus_per_node"] == launcher["tasks_per_node"] == 8 and launcher["nodes"] == 2
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] > 0
    assert launcher["additional_parameters"]["requeue"] is True
    trainer = hydra_node(args, "trainer")
    assert trainer["strategy"] == "ddp" and trainer["devices"] == 8 and trainer["num_nodes"] == 2
    assert "sync_batchnorm" in trainer


@pytest.mark.parametrize("preset,launcher", [
    ("slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher"), ("joblib", "JoblibLauncher"),
])
def test_launcher_presets_compose(preset, launcher):
    needs("hydra_submitit_launcher")
    needs("hydra_joblib_launcher")
    assert hydra_node([f"+launcher={preset}"], "hydra.launcher")["_target_"].endswith(launcher)


@pytest.mark.parametrize("preset,extra,direction,monitor", [
    ("gan_optuna", [], "minimize", "val/fid"),
    ("ring8_optuna", [], "maximize", "val/modes_captured"),
    ("gan_optuna", ["experiment=mlp_ring8"], "maximize", "val/modes_captured"),
])
def test_optuna_presets_follow_the_models_monitor(preset, extra, direction, monitor):
    needs("hydra_optuna_sweeper")
    args = [*extra, f"+hparams_search={preset}"]
    sweeper = hydra_node(args, "hydra.sweeper")
    assert sweeper["_target_"].endswith("OptunaSweeper") and hydra_node(args, "hydra.mode").name == "MULTIRUN"
    assert sweeper["direction"] == direction and hydra_node(args, "model.monitor.metric") == monitor
    assert sweeper["sampler"]["_target_"].endswith("TPESampler")
    assert hydra_node([*args, "seed=7"], "hydra.sweeper.sampler.seed") == 7, "the sampler is seeded by the run seed"
    assert sweeper["max_failure_rate"] == 1.0
    assert {"optimizer.players.generator.lr", "optimizer.players.discriminator.lr", "model.n_critic",
            "model.loss"} <= set(sweeper["params"])


def test_slurm_launcher_submits_one_array_job_with_the_presets_resources(tmp_path):
    """A stand-in `sbatch` keeps the script submitit writes (and refuses it): the resources, the
    requeue on preemption and the timeout signal are there, one array task per job."""
    needs("hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncp "$1" "$SBATCH_CAPTURE"\necho "sbatch: test double" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    script = tmp_path / "sbatch.sh"
    env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SBATCH_CAPTURE=str(script))
    proc = sweep(["+launcher=slurm_gpu", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2",
                  "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=600", "seed=0,1,2"],
                 tmp_path / "sweep", env=env, timeout=120)
    assert proc.returncode != 0 and "sbatch: test double" in proc.output
    text = script.read_text()
    for flag in ("--array=0-2", "--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--partition=gpu",
                 "--time=600", "--requeue", "--signal=USR2@120", "--job-name=gan"):
        assert f"#SBATCH {flag}" in text, (flag, text)
    assert "srun" in text and "submitit.core._submit" in text


# ------------------------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_basic_sweep_goes_on_past_failed_jobs_tabulates_and_skips_finished_jobs_when_rerun(tmp_path):
    """2 x 2 jobs, two of them invalid (n_critic=0): every job has its directory and summary.json, the
    invalid ones are recorded failed, the sweep goes on to the end, prints one table of its jobs (their
    swept values, status, monitored metric) and exits with status 1 naming the failed jobs; re-running
    the same sweep (same hydra.sweep.dir) skips the finished jobs."""
    sweep_dir = tmp_path / "sweep"
    args = [*TINY, "model.n_critic=1,0", "model.loss=hinge,ns"]
    first = sweep(args, sweep_dir)
    assert first.returncode == 1, first.output[-3000:]
    assert "2 of 4 jobs did not finish" in first.stderr
    table = first.stdout.split("swept values", 1)[1].split("sweep results:")[0]
    assert "model.n_critic=0 model.loss=ns" in table or "model.loss=ns model.n_critic=0" in table
    assert "val/modes_captured = " in table and "logger=csv" not in table  # only what the sweep swept
    jobs = summaries(sweep_dir)
    assert sorted(jobs) == [0, 1, 2, 3]
    finished = {n for n, s in jobs.items() if s["status"] == "finished"}
    failed = {n for n, s in jobs.items() if s["status"].startswith("failed")}
    assert len(finished) == 2 and len(failed) == 2, {n: s["status"] for n, s in jobs.items()}
    assert all("model.n_critic=0" in jobs[n]["overrides"] for n in failed)
    assert all(f"job {n}: failed" in first.stderr for n in failed), "the message names each failed job"
    assert all("model.n_critic" in jobs[n]["status"] for n in failed), "the failure names the key"
    assert all(math.isfinite(jobs[n]["metrics"]["val/modes_captured"]["best"]) for n in finished)
    assert (sweep_dir / "multirun.yaml").is_file()
    rows = table_rows(sweep_dir)
    assert len(rows) == 4 and sum("| failed |" in r for r in rows) == 2, rows
    assert "val/modes_captured" in (sweep_dir / "results.md").read_text()
    assert "sweep results:" in first.stdout

    mtimes = {n: (sweep_dir / str(n) / "summary.json").stat().st_mtime_ns for n in finished}
    ckpts = {n: (sweep_dir / str(n) / "checkpoints" / "last.ckpt").stat().st_mtime_ns for n in finished}
    second = sweep(args, sweep_dir)
    assert second.returncode == 1, second.output[-3000:]
    assert second.output.count("already finished") == 2 and second.output.count(": skipped") == 2
    for n in finished:  # not trained again: summary and checkpoint untouched
        assert (sweep_dir / str(n) / "summary.json").stat().st_mtime_ns == mtimes[n]
        assert (sweep_dir / str(n) / "checkpoints" / "last.ckpt").stat().st_mtime_ns == ckpts[n]
    assert len(table_rows(sweep_dir)) == 4


@pytest.mark.slow
def test_optuna_search_records_failed_trials_and_goes_on(tmp_path):
    """3 trials of the ring8 preset over n_critic in {0, 1} (0 is invalid: the job fails at once):
    the failed trials are told to Optuna as failed, the study completes and reports the best trial."""
    needs("hydra_optuna_sweeper")
    sweep_dir = tmp_path / "optuna"
    proc = sweep([*TINY[1:], "+hparams_search=ring8_optuna", "hydra.sweeper.n_trials=3", "model.n_critic=choice(0,1)"],
                 sweep_dir, multirun=False)  # the preset starts the multirun itself
    assert proc.returncode == 1 and "did not finish" in proc.stderr, proc.output[-3000:]
    jobs = summaries(sweep_dir)
    assert sorted(jobs) == [0, 1, 2]
    statuses = [s["status"].split(":")[0] for s in jobs.values()]
    assert "failed" in statuses and "finished" in statuses, statuses
    assert proc.output.count("Failed experiment") == statuses.count("failed")
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.best_params["model.n_critic"] == 1 and math.isfinite(best.best_value)
    assert "Directions: ['maximize']" in proc.output  # from model.monitor.mode (val/modes_captured: max)
    assert len(table_rows(sweep_dir)) == 3


@pytest.mark.slow
def test_joblib_runs_two_experiments_in_parallel(tmp_path):
    """`+experiment=glob(mlp_*,exclude=[*_long,*_fast])` expands to the two short MLP presets; joblib runs them side
    by side, both in the one default sweep directory (each worker process resolves the sweep directory
    again; the command-line task_name keeps the presets' own task names out of it)."""
    needs("hydra_joblib_launcher")
    proc = sweep(["+launcher=joblib", "+experiment=glob(mlp_*,exclude=[*_long,*_fast])", *TINY[1:], "task_name=mlp",
                  f"paths.log_dir={tmp_path}"], None)
    assert proc.returncode == 0, proc.output[-3000:]
    sweep_dirs = list(tmp_path.glob("*/multiruns/*"))
    assert len(sweep_dirs) == 1, sweep_dirs
    sweep_dir = sweep_dirs[0]
    jobs = summaries(sweep_dir)
    assert sorted(s["choices"]["experiment"] for s in jobs.values()) == ["mlp_grid25", "mlp_ring8"]
    assert all(s["status"] == "finished" for s in jobs.values())
    assert "n_jobs=2" in proc.output

    def span(n: int) -> tuple[float, float]:  # Hydra writes .hydra/ as the job starts; the summary ends it
        job = sweep_dir / str(n)
        return (job / ".hydra" / "config.yaml").stat().st_mtime, (job / "summary.json").stat().st_mtime

    (a0, a1), (b0, b1) = span(0), span(1)
    assert a0 < b1 and b0 < a1, "the two jobs overlapped in time"
    assert len(table_rows(sweep_dir)) == 2


@pytest.mark.slow
def test_submitit_local_runs_two_jobs(tmp_path):
    """The SLURM launcher's code path on this machine (submitit's local executor)."""
    needs("hydra_submitit_launcher")
    sweep_dir = tmp_path / "submitit"
    proc = sweep(["+launcher=submitit_local", *TINY, "seed=0,1"], sweep_dir)
    assert proc.returncode == 0, proc.output[-3000:]
    jobs = summaries(sweep_dir)
    assert sorted(jobs) == [0, 1] and sorted(s["seed"] for s in jobs.values()) == [0, 1]
    assert all(s["status"] == "finished" for s in jobs.values())
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2
    assert len(table_rows(sweep_dir)) == 2


# ------------------------------------------------------------------------------------- callbacks
def test_a_nan_objective_is_a_failed_trial_in_optuna_sweeps_only():
    from hydra.core.utils import JobReturn, JobStatus

    from src.utils.sweep_callbacks import OptunaFailedTrials, TrialFailed

    def job(target: str, value: float) -> tuple:
        cfg = OmegaConf.create({"hydra": {"sweeper": {"_target_": target}, "runtime": {"output_dir": "/x/3"}},
                                "model": {"monitor": {"metric": "val/fid"}}})
        ret = JobReturn(status=JobStatus.COMPLETED, _return_value=value)
        OptunaFailedTrials().on_job_end(config=cfg, job_return=ret)
        return ret

    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    basic = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    failed = job(optuna, float("nan"))
    assert failed.status == JobStatus.FAILED
    with pytest.raises(TrialFailed, match="val/fid"):
        _ = failed.return_value
    assert job(optuna, 0.25).return_value == 0.25
    assert math.isnan(job(basic, float("nan")).return_value), "the basic sweeper must see NaN and go on"


def test_sweep_table_falls_back_to_a_minimal_one(tmp_path, monkeypatch):
    """Without src.results (or if it fails) the table still lists job, overrides, status and the best
    of the monitored metric."""
    from src.utils import sweep_callbacks

    for n, (status, best) in enumerate([("finished", 6.0), ("failed: ConfigError: model.n_critic", None)]):
        d = tmp_path / str(n)
        d.mkdir()
        metrics = {"val/modes_captured": {"best": best, "final": best}} if best is not None else {}
        (d / "summary.json").write_text(json.dumps({"status": status, "overrides": [f"seed={n}"], "metrics": metrics}))
        (d / "config_resolved.yaml").write_text("model:\n  monitor: {metric: val/modes_captured, mode: max}\n")

    import src.results

    monkeypatch.setattr(src.results, "collect", lambda *a, **k: (_ for _ in ()).throw(SystemExit("boom")))
    path = sweep_callbacks.write_sweep_table(tmp_path)
    text = path.read_text()
    assert "| 0 | seed=0 | finished | val/modes_captured | 6 |" in text
    assert "| 1 | seed=1 | failed | val/modes_captured | – |" in text
    assert sweep_callbacks.write_sweep_table(tmp_path / "nothing") is None


def test_sweep_table_is_updated_as_jobs_end(tmp_path):
    """After each job (so an interrupted sweep has one too): the table without plots, replaced whole."""
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode

    from src.utils.sweep_callbacks import SweepResults

    d = tmp_path / "0"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({"status": "finished", "overrides": ["seed=0"], "seed": 0,
                                                "metrics": {"val/mmd": {"best": 0.5, "final": 0.6}}}))
    cfg = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)}}})
    SweepResults().on_job_end(config=cfg, job_return=JobReturn(status=JobStatus.COMPLETED, _return_value=0.5))
    text = (tmp_path / "results.md").read_text()
    assert "val/mmd" in text and "| 0 |" in text and (tmp_path / "results.json").is_file()
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".results-*"))
    cfg.hydra.mode = RunMode.RUN
    (tmp_path / "results.md").unlink()
    SweepResults().on_job_end(config=cfg, job_return=JobReturn(status=JobStatus.COMPLETED, _return_value=0.5))
    assert not (tmp_path / "results.md").exists(), "single runs leave no sweep table"
