"""One run: build everything from the composed config, fit, validate, summarise.

compose (Hydra) -> validate (schema) -> data module, LightningModule (networks, loss, optimizer plan),
callbacks, loggers, trainer -> fit (exactly resumable) -> final validation -> summary.json.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from src.callbacks.run_config import ConfigInCheckpoint
from src.callbacks.summary import RunSummary
from src.utils.config import hydra_choices, hydra_overrides, resolved_container
from src.utils.errors import ConfigError, RunInterrupted, UserError
from src.utils.resume import check_checkpoint, read_run_info, resume_config, run_dir_of, write_run_info
from src.utils.schema import validate_config

log = logging.getLogger(__name__)


def instantiate(node: Any, key: str, **kwargs: Any) -> Any:
    """hydra.utils.instantiate, with errors turned into ones that name the config key: a UserError
    raised inside a constructor comes out as itself; anything else (an unknown argument, a wrong
    _target_) as a ConfigError for `key`."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as err:
        cause: BaseException | None = err
        while cause is not None:
            if isinstance(cause, UserError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise ConfigError(f"{key}: {err}") from err


def build_datamodule(cfg: DictConfig) -> pl.LightningDataModule:
    args = OmegaConf.to_container(cfg.dataset, resolve=True)
    args.pop("meta", None)  # facts for other groups, not data module arguments
    return instantiate(args, "dataset")


def build_model(cfg: DictConfig) -> pl.LightningModule:
    return instantiate(cfg.model, "model")


def build_callbacks(cfg: DictConfig, summary_extra: dict, config: dict, choices: dict) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ConfigError(f"callbacks.{name}: needs a _target_")
        kwargs = {"extra": summary_extra} if node._target_.endswith("RunSummary") else {}
        callbacks.append(instantiate(node, f"callbacks.{name}", _convert_="all", **kwargs))
    callbacks.append(ConfigInCheckpoint(config, choices, int(cfg.seed)))
    return callbacks


def _run_name(overrides: list[str]) -> str | None:
    keep = [o for o in overrides if not o.startswith(("ckpt_path", "hydra", "paths."))]
    return ",".join(keep)[:120] or None


def _sweep_name() -> str | None:
    """The sweep directory's name in a multirun (e.g. 2026-11-23_22-04-55-571980_2843), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(str(HydraConfig.get().sweep.dir)).name or None


def build_loggers(cfg: DictConfig, resume_info: dict, overrides: list[str]) -> list:
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        kwargs: dict[str, Any] = {}
        if node._target_.endswith("WandbLogger"):
            if node.get("name") is None:
                kwargs["name"] = _run_name(overrides)
            sweep = _sweep_name()
            if sweep is not None:  # the jobs of one sweep form one wandb group: <group>/<sweep dir name>
                kwargs["group"] = f"{node.get('group') or cfg.task_name}/{sweep}"
                import wandb

                if wandb.run is not None:  # the previous job of this sweep process left its run open:
                    wandb.finish()         # close it, or WandbLogger would log this job into it
            if resume_info.get("wandb_id"):
                # continue the original wandb run
                kwargs.update(id=resume_info["wandb_id"], resume="allow")
        loggers.append(instantiate(node, f"logger.{name}", **kwargs))
    return loggers


def previous_attempt(output_dir: Path, overrides: list[str]) -> tuple[str, Any] | None:
    """What an earlier attempt of this same job left in its output directory (a re-run sweep writes
    each job to the same directory): ("finished", summary) or ("interrupted", last checkpoint)."""
    info = read_run_info(output_dir)
    if not info or sorted(info.get("overrides", [])) != sorted(overrides):
        return None
    summary_path = output_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") == "finished":
            return "finished", summary
    last = output_dir / "checkpoints" / "last.ckpt"
    return ("interrupted", last) if last.is_file() else None


def record_failure(cfg: DictConfig, error: BaseException) -> None:
    """Write summary.json for a run that failed before its trainer could (config or data errors)."""
    try:
        path = Path(cfg.paths.output_dir) / "summary.json"
        if not path.is_file():
            RunSummary(str(path), extra={"seed": cfg.get("seed"), "choices": hydra_choices(),
                                         "overrides": hydra_overrides()}).write_failed(error)
    except Exception:  # noqa: BLE001 - never mask the original error
        pass


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one run; returns the summary dict (also written to <output_dir>/summary.json)."""
    choices, overrides = hydra_choices(), hydra_overrides()
    resume_info: dict = {}
    attempt = previous_attempt(Path(cfg.paths.output_dir), overrides) if not cfg.get("ckpt_path") else None
    if attempt and attempt[0] == "finished":
        log.info("this job already finished in %s: skipped", cfg.paths.output_dir)
        summary = attempt[1]
        return {"summary_path": str(Path(cfg.paths.output_dir) / "summary.json"), "metrics": summary["metrics"],
                "output_dir": summary.get("output_dir"), "status": "finished (skipped: done before)"}
    if attempt and attempt[0] == "interrupted":
        log.info("resuming this job from %s", attempt[1])
        with open_dict(cfg):
            cfg.ckpt_path = str(attempt[1])
    if cfg.get("ckpt_path"):
        ckpt = check_checkpoint(cfg.ckpt_path)
        cfg = resume_config(cfg, str(ckpt), overrides, choices)
        resume_info = read_run_info(run_dir_of(ckpt))
    validate_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = resolved_container(cfg)

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    if hasattr(datamodule, "check"):
        datamodule.check()  # missing or corrupt data fails here, before loggers start
    model = build_model(cfg)
    model.plan_optimizers() if hasattr(model, "plan_optimizers") else None  # optimizer config errors now
    summary_extra = {"seed": int(cfg.seed), "task_name": cfg.task_name, "choices": choices,
                     "overrides": overrides, "output_dir": str(output_dir.resolve()),
                     "resumed_from": str(cfg.ckpt_path) if cfg.get("ckpt_path") else None}
    callbacks = build_callbacks(cfg, summary_extra, config, choices)
    loggers = build_loggers(cfg, resume_info, overrides)
    trainer: pl.Trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)

    info = {"seed": int(cfg.seed), "choices": choices, "overrides": overrides}
    for lg in trainer.loggers:
        if isinstance(lg, pl.loggers.WandbLogger) and trainer.is_global_zero:
            info["wandb_id"] = lg.experiment.id
            info["wandb_dir"] = str(Path(lg.experiment.dir).parent)
        lg.log_hyperparams({"config": config, "choices": choices, "seed": int(cfg.seed)})
    if trainer.is_global_zero:
        write_run_info(output_dir, info)
        OmegaConf.save(OmegaConf.create(config), output_dir / "config_resolved.yaml")

    summary = next(c for c in trainer.callbacks if isinstance(c, RunSummary))
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        val_steps = {e.get("final_step") for k, e in summary.metrics.items() if k.startswith("val/")}
        if cfg.get("validate_after_fit") and not trainer.fast_dev_run and trainer.global_step not in val_steps:
            trainer.validate(model, datamodule=datamodule, verbose=False)
            summary.record(trainer)
    except SIGTERMException as err:
        # Lightning's own handler, active outside the training steps GracefulShutdown covers (the final
        # validation), raises a SystemExit that would otherwise end the process with status 0
        last = output_dir / "checkpoints" / "last.ckpt"
        resume = f"resume with `python -m src.run ckpt_path={last}`" if last.is_file() else "no last.ckpt yet"
        raise RunInterrupted(f"SIGTERM received at step {trainer.global_step} outside the training steps (e.g. "
                             f"in the final validation): stopped; {resume}") from err
    path = summary.write(trainer)
    if trainer.is_global_zero:
        log.info("summary: %s", path)
    return {"summary_path": str(path), "output_dir": str(output_dir.resolve()), "metrics": summary.metrics,
            "status": summary.status, "trainer": trainer, "model": model, "is_global_zero": trainer.is_global_zero}


os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
