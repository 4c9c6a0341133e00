"""Config helpers: resolvers, Hydra choices, secrets scrubbing, the resolved config as plain data."""
from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.utils.env import secret_values


#: The keys every `optimizer` group shares (src/optim/factory.py), placed by conf/config.yaml. The group is an
#: open node, so that any of the optimizer's keyword arguments (`optimizer.eps=...`) and any player's setting
#: (`optimizer.players.<player>.<key>=...`) works on the command line without `+`; an unknown keyword fails
#: when the optimizer is built, naming it.
OPTIMIZER_COMMON = {"players": {}, "scheduler": None, "lookahead": None, "update": None, "order": None}


def register_configs() -> None:
    """Before Hydra composes: the `${run_suffix:}` resolver (a per-process suffix, the pid, that keeps
    output directories of runs started in the same microsecond apart) and the stored config nodes."""
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("run_suffix"):
        OmegaConf.register_new_resolver("run_suffix", lambda: f"{os.getpid()}", use_cache=True)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", run_dir)
        OmegaConf.register_new_resolver("hydra_subdir", hydra_subdir)
    common = OmegaConf.create(OPTIMIZER_COMMON)
    OmegaConf.set_struct(common, False)
    ConfigStore.instance().store(name="optimizer_common", node=common)


def hydra_choices() -> dict[str, Any]:
    """The group options this run composed (model=..., optimizer=...), if run under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = OmegaConf.to_container(HydraConfig.get().runtime.choices, resolve=True)
    return {k: v for k, v in choices.items() if not k.startswith("hydra/") and k != "hydra"}


DEFAULT_OUTPUT_DIR = "${hydra:runtime.output_dir}"


def resumed_run_dir(root) -> str | None:
    """The run directory a resume continues: the one holding ``ckpt_path`` (<run>/checkpoints/x.ckpt) if it
    is a run directory of this project (it has .hydra/config.yaml), else None."""
    ckpt = OmegaConf.select(root, "ckpt_path")
    if not ckpt:
        return None
    from pathlib import Path

    run = Path(str(ckpt)).expanduser().resolve().parent.parent
    return str(run) if (run / ".hydra" / "config.yaml").is_file() else None


def run_dir(default: str, *, _root_) -> str:
    """`hydra.run.dir`: the run directory a resume continues; else `paths.output_dir` when the user set
    it (so that everything of the run, .hydra/ and run.log included, lands there); else `default`."""
    resumed = resumed_run_dir(_root_)
    if resumed is not None:
        return resumed
    node = _root_.paths._get_node("output_dir")
    if node is not None and node._value() != DEFAULT_OUTPUT_DIR:
        return str(_root_.paths.output_dir)
    return default


def hydra_subdir(*, _root_) -> str:
    """`hydra.output_subdir`: `.hydra`, or for a resume `.hydra/resume_<time>` (the run's own .hydra/ keeps
    the config it was started with)."""
    if resumed_run_dir(_root_) is None:
        return ".hydra"
    from datetime import datetime

    return f".hydra/resume_{datetime.now():%Y-%m-%d_%H-%M-%S-%f}"


def sweep_name() -> str | None:
    """The sweep directory's name in a multirun (e.g. 2026-11-23_22-04-55-571980_2843), else None."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(str(HydraConfig.get().sweep.dir)).name or None


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def scrub(value: Any) -> Any:
    """Replace any secret value (e.g. WANDB_API_KEY) found in strings of a nested structure."""
    secrets = secret_values()
    if not secrets:
        return value

    def _scrub(v):
        if isinstance(v, str):
            for s in secrets:
                v = v.replace(s, "***")
            return v
        if isinstance(v, dict):
            return {k: _scrub(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(_scrub(x) for x in v)
        return v

    return _scrub(value)


def resolved_container(cfg: DictConfig) -> dict:
    """The fully resolved config as plain Python data, secrets scrubbed."""
    return scrub(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
