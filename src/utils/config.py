"""Config helpers: resolvers, Hydra choices, secrets scrubbing, the resolved config as plain data."""
from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from src.utils.env import secret_values


def register_resolvers() -> None:
    """`${run_suffix:}`: a per-process suffix (pid) that keeps output directories of runs started in
    the same microsecond apart."""
    if not OmegaConf.has_resolver("run_suffix"):
        OmegaConf.register_new_resolver("run_suffix", lambda: f"{os.getpid()}", use_cache=True)


def hydra_choices() -> dict[str, Any]:
    """The group options this run composed (model=..., optimizer=...), if run under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = OmegaConf.to_container(HydraConfig.get().runtime.choices, resolve=True)
    return {k: v for k, v in choices.items() if not k.startswith("hydra/") and k != "hydra"}


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
