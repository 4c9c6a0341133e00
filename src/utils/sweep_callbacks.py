"""Hydra callbacks for sweeps (`python -m src.run -m ...`, `+hparams_search=NAME`), registered in
conf/hydra/default.yaml:

* :class:`SweepResults` writes one table of all the jobs of a sweep to ``<sweep dir>/results.md`` (with
  ``results.json`` and plots, by ``src.results``), whatever launcher ran the jobs: updated as each job
  ends, complete with plots when the sweep ends.
* :class:`OptunaFailedTrials` hands a job whose objective is NaN (a failed, crashed or diverged run:
  src/run.py returns NaN for it) to the Optuna sweeper as a *failed* trial, so the study records it as
  failed and samples on, with any optuna version the sweeper plugin accepts.

A job that fails never stops a sweep (src/run.py), and nothing here may: every error is logged, not raised;
only once every job has ended does :class:`SweepResults` end the sweep with status 1 if a job failed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class TrialFailed(RuntimeError):
    """A sweep job whose objective is not a finite number (the job failed, crashed or diverged)."""


def _is_optuna_sweep(config: DictConfig) -> bool:
    target = OmegaConf.select(config, "hydra.sweeper._target_", default="") or ""
    return "optuna" in str(target).lower()


class OptunaFailedTrials(Callback):
    """In an Optuna sweep, turn a NaN / infinite objective into a failed job.

    hydra-optuna-sweeper (which needs optuna < 3) hands the returned value to ``study.tell``; optuna 2.x
    refuses NaN there and the sweeper then crashes the whole study. A failed job, instead, is told to
    the study as ``TrialState.FAIL`` and the search goes on (with ``max_failure_rate: 1.0``, as the
    presets in conf/hparams_search set). Other sweepers are left alone: the basic sweeper stops at a
    failed job, and src/run.py's NaN is what it must see there."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        try:
            if job_return.status != JobStatus.COMPLETED or not _is_optuna_sweep(config):
                return
            value = job_return._return_value
            if isinstance(value, (int, float)) and not math.isfinite(float(value)):
                metric = OmegaConf.select(config, "model.monitor.metric", default="the monitored metric")
                job_return.status = JobStatus.FAILED
                job_return.return_value = TrialFailed(
                    f"objective {metric} = {value} (the run failed or never logged it); "
                    f"see {Path(config.hydra.runtime.output_dir) / 'summary.json'}")
        except Exception:  # noqa: BLE001 - a callback must never break a sweep
            log.exception("OptunaFailedTrials: could not inspect the job's result")


# ------------------------------------------------------------------------------------ sweep table
def _monitor_of(job_dir: Path) -> str | None:
    """The monitored metric of a job, from the config it ran with."""
    for name in ("config_resolved.yaml", ".hydra/config.yaml"):
        path = job_dir / name
        if path.is_file():
            try:
                cfg = OmegaConf.load(path)
                metric = OmegaConf.select(cfg, "model.monitor.metric", default=None, throw_on_resolution_failure=False)
                if isinstance(metric, str):
                    return metric
            except Exception:  # noqa: BLE001
                continue
    return None


def job_rows(sweep_dir: Path) -> list[dict]:
    """One row per job directory of a sweep (those with a summary.json), in job order."""
    rows = []
    for summary_path in sweep_dir.rglob("summary.json"):
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if summary.get("mode") == "eval":
            continue
        job_dir = summary_path.parent
        monitor = _monitor_of(job_dir)
        entry = (summary.get("metrics") or {}).get(monitor or "", {})
        rows.append({"job": str(job_dir.relative_to(sweep_dir)), "overrides": list(summary.get("overrides") or []),
                     "status": str(summary.get("status")), "monitor": monitor, "best": entry.get("best"),
                     "wall_time_s": summary.get("wall_time_s")})

    def order(row: dict):
        head = row["job"].split("/")[0]
        return (0, int(head), row["job"]) if head.isdigit() else (1, 0, row["job"])

    return sorted(rows, key=order)


def minimal_table(sweep_dir: Path, rows: list[dict]) -> str:
    """Markdown: job / overrides / status / monitored metric (best), without src.results."""
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|")

    def number(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, (int, float)) else "–"

    lines = [f"# Sweep: {sweep_dir}", "", f"{len(rows)} jobs, {sum(r['status'] == 'finished' for r in rows)} finished.",
             "", "| job | overrides | status | monitored metric | best |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {cell(r['job'])} | {cell(' '.join(r['overrides']))} | {cell(r['status'].split(':')[0])} "
                     f"| {cell(r['monitor'] or '–')} | {number(r['best'])} |")
    return "\n".join(lines) + "\n"


def swept(rows: list[dict]) -> dict[str, list[str]]:
    """{job: the overrides that differ between the jobs} (what the sweep swept)."""
    def pairs(row):
        return dict(o.split("=", 1) if "=" in o else (o, "") for o in row["overrides"])

    by_job = {row["job"]: pairs(row) for row in rows}
    keys = sorted({k for p in by_job.values() for k in p})
    varying = [k for k in keys if len({p.get(k) for p in by_job.values()}) > 1]
    return {job: [f"{k}={p[k]}" for k in varying if k in p] for job, p in by_job.items()}


def console_table(rows: list[dict]) -> str:
    """The sweep as printed at its end: one line per job, its swept values, status and monitored metric."""
    values = swept(rows)
    cells = [(r["job"], " ".join(values[r["job"]]) or "—", r["status"].split(":")[0],
              f"{r['monitor']} = {r['best']:.4g}" if isinstance(r["best"], (int, float)) else (r["monitor"] or "—"))
             for r in rows]
    head = ("job", "swept values", "status", "monitored metric (best)")
    widths = [max(len(str(c[i])) for c in [head, *cells]) for i in range(4)]
    lines = ["  ".join(f"{str(c[i]):<{widths[i]}}" for i in range(4)).rstrip() for c in [head, *cells]]
    return "\n".join(lines)


def write_sweep_table(sweep_dir: str | Path, plots: bool = True) -> Path | None:
    """Write <sweep_dir>/results.md (src.results: table, results.json and, with `plots`, the plots; or a
    minimal table if that fails). Without plots the files are replaced atomically, so jobs finishing
    at the same time in parallel workers may each rewrite the table. Returns its path, or None when
    the sweep left no summary.json yet."""
    sweep_dir = Path(sweep_dir)
    rows = job_rows(sweep_dir) if sweep_dir.is_dir() else []
    if not rows:
        return None
    out = sweep_dir / "results.md"
    staging = sweep_dir if plots else Path(tempfile.mkdtemp(prefix=".results-", dir=sweep_dir))
    try:
        try:
            from src import results

            runs = [results.load_run(p) for p in results.find_summaries([sweep_dir])]
            monitors = [r["monitor"] for r in rows if r["monitor"]]
            # the monitored metric(s) first, then what every run that logged anything has in common
            metrics = list(dict.fromkeys(monitors + results.default_metrics([r for r in runs if r["metrics"]])))
            results.collect([sweep_dir], staging, metrics=metrics[: results.MAX_DEFAULT_METRICS] or None,
                            plots=plots)
        except BaseException as err:  # noqa: BLE001 - SystemExit included: fall back, never fail the sweep
            log.warning("src.results could not tabulate %s (%s): writing a minimal table", sweep_dir, err)
            (staging / "results.json").unlink(missing_ok=True)
            (staging / "results.md").write_text(minimal_table(sweep_dir, rows))
        if staging != sweep_dir:
            for name in ("results.json", "results.md"):
                if (staging / name).is_file():
                    os.replace(staging / name, sweep_dir / name)
    finally:
        if staging != sweep_dir:
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _is_other_rank() -> bool:
    """A process other than rank 0 of a multi-process job: one that Lightning re-launched for DDP (it
    re-runs the whole command, sweep included) or an srun task > 0 of a SLURM job. The table is rank
    0's to write."""
    for var in ("LOCAL_RANK", "RANK", "SLURM_PROCID"):
        try:
            if int(os.environ.get(var, "0")) > 0:
                return True
        except ValueError:
            continue
    return False


class SweepResults(Callback):
    """The sweep's table, ``<sweep dir>/results.md``: one row per job (job number, overrides, status and
    the metrics, the monitored one first) and one per group. Updated as each job ends (so an interrupted
    or crashed sweep still leaves one) and written with plots when the sweep ends."""

    def __init__(self, enabled: bool = True, plots: bool = True):
        self.enabled = bool(enabled)
        self.plots = bool(plots)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not self.enabled or _is_other_rank() or getattr(OmegaConf.select(config, "hydra.mode"), "name", None) != "MULTIRUN":
            return
        try:
            write_sweep_table(str(config.hydra.sweep.dir), plots=False)
        except Exception:  # noqa: BLE001
            log.exception("could not update the sweep's results table")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the table, print it, and end the sweep with status 1 when a job failed, naming which."""
        if not self.enabled or _is_other_rank():
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            path = write_sweep_table(sweep_dir, plots=self.plots)
        except Exception:  # noqa: BLE001
            log.exception("could not write the sweep's results table")
            path = None
        rows = job_rows(sweep_dir) if sweep_dir.is_dir() else []
        if rows:
            print(f"\n{console_table(rows)}")
        if path is not None:
            log.info("sweep results: %s", path)
            print(f"\nsweep results: {path}")
        failed = [r for r in rows if not r["status"].startswith("finished")]
        if failed:
            print(f"\n{len(failed)} of {len(rows)} jobs did not finish: "
                  + "; ".join(f"job {r['job']}: {r['status']}" for r in failed), file=sys.stderr)
            raise SystemExit(1)
