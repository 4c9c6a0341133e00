"""One run: build everything from the composed config, fit, validate, summarise.

compose (Hydra) -> validate (schema) -> data module, LightningModule (networks, loss, optimizer plan),
callbacks, loggers, trainer -> fit (exactly resumable) -> final validation -> test (``test_after_fit``:
the final weights on the test split, once) -> summary.json.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.errors import InstantiationException
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from src.callbacks.model_summary import ModelSummary
from src.callbacks.progress import ProgressBar
from src.callbacks.run_config import ConfigInCheckpoint
from src.callbacks.summary import RunSummary
from src.optim.factory import OptimizerGroup
from src.utils.config import hydra_choices, hydra_overrides, resolved_container
from src.utils.errors import ConfigError, RunInterrupted, UserError
from src.utils.resume import CheckpointError, held_model, load_checkpoint, read_run_info, resume_config, write_run_info
from src.utils.quiet import silence_library_noise
from src.utils.schema import validate_config

log = logging.getLogger(__name__)
silence_library_noise()


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


def build_model(cfg: DictConfig, train: bool = True) -> pl.LightningModule:
    """The LightningModule of `cfg.model`, with the optimizer group when it is to be trained."""
    optimizer = OptimizerGroup(cfg.optimizer) if train else None
    return instantiate(cfg.model, "model", optimizer=optimizer)


def check_fit(cfg: DictConfig, model: pl.LightningModule, choices: dict) -> None:
    """A model and a dataset that do not fit fail here, naming both (not at the first step)."""
    kind = OmegaConf.select(cfg, "dataset.meta.kind")
    if kind is None or kind in model.data_kinds:
        return
    conf = Path(__file__).resolve().parents[1] / "conf" / "dataset"
    fitting = [p.stem for p in sorted(conf.glob("*.yaml"))
               if OmegaConf.select(OmegaConf.load(p), "meta.kind") in model.data_kinds]
    raise ConfigError(f"model={choices.get('model', '?')} ({type(model).__name__}) trains on "
                      f"{' or '.join(model.data_kinds)} data, but dataset={choices.get('dataset', '?')} holds {kind}: "
                      f"pick a dataset that fits, e.g. {', '.join(fitting) or 'one of that kind'}")


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    callbacks: list[pl.Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        if "_target_" not in node:
            raise ConfigError(f"callbacks.{name}: needs a _target_")
        callbacks.append(instantiate(node, f"callbacks.{name}", _convert_="all"))
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    return [instantiate(node, f"logger.{name}") for name, node in (cfg.get("logger") or {}).items()
            if node is not None]


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


def display_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """What the trainer shows, where its flags ask for it: the progress bar counting the run's budget in its
    own unit, and the model summary without the FLOPs Lightning cannot count here."""
    shown: list[pl.Callback] = []
    if cfg.trainer.get("enable_progress_bar", True):
        shown.append(ProgressBar())
    if cfg.trainer.get("enable_model_summary", True):
        shown.append(ModelSummary())
    return shown


def start_experiments(loggers: list) -> Callable[[], None]:
    """Start the loggers' runs in the background (wandb's takes about a second: its service process, its
    files), so that they overlap the data and trainer set-up; returns the function that waits for them
    and raises their error, if any."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            for lg in loggers:
                lg.experiment  # noqa: B018 - Lightning's loggers create their run on first access
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            errors.append(err)

    thread = threading.Thread(target=start, name="start-loggers", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if errors:
            raise errors[0]

    return wait


def quiet_cuda_probe() -> None:
    """torch.optim asks ``torch.cuda.is_available()`` at every optimizer step. Lightning sets
    PYTORCH_NVML_BASED_CUDA_CHECK=1 (it keeps forked workers safe on GPU machines), under which each query
    on a machine without a CUDA device loads NVML again, as torch caches the answer only once CUDA is
    initialised. Where there is no device there is nothing to protect, and torch's runtime check gives the
    same answer, cached: drop the variable."""
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and not torch.cuda.is_available():
        del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one run; returns the summary dict (also written to <output_dir>/summary.json)."""
    choices, overrides = hydra_choices(), hydra_overrides()
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
        held, _ = held_model(load_checkpoint(cfg.ckpt_path, mmap=True))  # readable, and the model asked for
        cfg, choices, overrides = resume_config(cfg, str(cfg.ckpt_path), overrides, choices)
        # a resume writes into its own run: Lightning's "checkpoint directory is not empty" is expected there
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        if held is not None and choices.get("model") not in (None, held):
            raise CheckpointError(f"ckpt_path: {cfg.ckpt_path} holds a model={held} run, but model={choices['model']} "
                                  "was asked for")
    validate_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    config = resolved_container(cfg)

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    quiet_cuda_probe()
    datamodule = build_datamodule(cfg)
    datamodule.check()  # missing or corrupt data fails here, before loggers start
    model = build_model(cfg)
    check_fit(cfg, model, choices)
    model.check_training()  # optimizer and update-rule errors fail here too
    loggers = build_loggers(cfg)
    started = start_experiments(loggers)  # wandb starts while the data are set up
    datamodule.setup("fit")
    if cfg.get("test_after_fit") and not datamodule.has_test_split:
        raise ConfigError(f"test_after_fit=true: dataset={choices.get('dataset', '?')} has no test split here "
                          "(dataset=scenes: set dataset.num_test > 0)")
    summary = RunSummary(str(output_dir / "summary.json"), extra={
        "seed": int(cfg.seed), "task_name": cfg.task_name, "choices": choices, "overrides": overrides,
        "output_dir": str(output_dir.resolve()),
        "resumed_from": str(cfg.ckpt_path) if cfg.get("ckpt_path") else None})
    callbacks = [*build_callbacks(cfg), summary, ConfigInCheckpoint(config, choices, int(cfg.seed))]
    callbacks += display_callbacks(cfg)
    trainer: pl.Trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    started()

    info = {"seed": int(cfg.seed), "choices": choices, "overrides": overrides}
    for lg in trainer.loggers:
        if isinstance(lg, pl.loggers.WandbLogger) and trainer.is_global_zero:
            info["wandb_id"] = lg.experiment.id
            info["wandb_dir"] = str(Path(lg.experiment.dir).parent)
        lg.log_hyperparams({"config": config, "choices": choices, "seed": int(cfg.seed)})
    if trainer.is_global_zero:
        write_run_info(output_dir, info)
        OmegaConf.save(OmegaConf.create(config), output_dir / "config_resolved.yaml")

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if cfg.get("validate_after_fit") and not trainer.fast_dev_run and not summary.validated_at(trainer.global_step):
            trainer.validate(model, datamodule=datamodule, verbose=False)
            summary.record(trainer)
        if cfg.get("test_after_fit"):
            trainer.test(model, datamodule=datamodule, verbose=False)  # the final weights, once
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

