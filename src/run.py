"""Entry point: `python -m src.run [experiment=NAME] [group=option ...] [key=value ...]`, and
`python -m src.run -m ...` for sweeps (`+experiment=NAME` is read as `experiment=NAME`). See README.md.

In a sweep, a job that fails (bad config, missing data, divergence, a crash) is recorded as failed in its
own summary.json and returns NaN (Optuna marks the trial failed), and the sweep goes on."""
from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from src.utils.env import load_environment

load_environment()  # before Hydra composes: .env may set DATA_DIR, OUTPUT_DIR, WANDB_*

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from src.utils.cli import normalise_argv  # noqa: E402
from src.utils.config import register_configs  # noqa: E402
from src.utils.errors import RunInterrupted, UserError  # noqa: E402
from src.utils.resume import check_resume_arguments  # noqa: E402

register_configs()
log = logging.getLogger("src.run")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def objective(cfg: DictConfig, metrics: dict) -> float:
    """The value a sweeper optimises: the best value of the model's monitored metric (NaN if absent)."""
    monitor = cfg.model.get("monitor") or {}
    value = metrics.get(monitor.get("metric", ""), {}).get("best")
    return float(value) if value is not None and math.isfinite(value) else float("nan")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from src.callbacks.summary import headline_table
    from src.train import record_failure, train

    multirun = _is_multirun()
    try:
        result = train(cfg)
    except UserError as err:
        record_failure(cfg, err)
        if multirun and not isinstance(err, RunInterrupted):
            log.error("job failed: %s", err)
            return float("nan")
        logging.getLogger("src.run.log_only").error("%s", err)  # printed below; run.log keeps it too
        print(f"\nerror: {err}", file=sys.stderr)
        if err.hand_over is not None:
            sys.stderr.flush()
            err.hand_over()  # submitit: requeue the job (it resumes from the checkpoint just written), exit
        sys.exit(err.exit_code)
    except Exception as err:
        record_failure(cfg, err)
        if multirun:  # one crashed job must not end the sweep
            log.exception("job crashed")
            return float("nan")
        raise
    if result.get("is_global_zero", True):
        summary = json.loads(Path(result["summary_path"]).read_text())
        print(f"\n{headline_table(summary)}\noutputs in: {result['output_dir']}")
    return objective(cfg, result["metrics"])


if __name__ == "__main__":
    try:
        sys.argv[1:] = normalise_argv(sys.argv[1:])
        check_resume_arguments(sys.argv[1:])  # a bad checkpoint fails before any run directory exists
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()
