"""Build each player's optimizer (or one joint game optimizer) from the `optimizer` config group.

A group file holds a ``_partial_`` optimizer, optional per-player overrides and an optional scheduler::

    optimizer: {_target_: torch.optim.Adam, _partial_: true, lr: 2e-4, betas: [0.5, 0.999]}
    players: {discriminator: {lr: 4e-4}}     # e.g. two time-scale learning rates
    scheduler: null                           # a _partial_ torch.optim.lr_scheduler, stepped per step

If the optimizer is a :class:`~src.optim.base.GameOptimizer`, one optimizer is built over all
players (one param group per player, the overrides applied to the groups); otherwise one per player.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import hydra
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer

from src.optim.base import is_game_optimizer
from src.utils.errors import ConfigError

JOINT = "joint"


@dataclass
class PlayerOptimizers:
    """What a two-player module trains with. `optimizers` is keyed by player, or by "joint"."""

    joint: bool
    optimizers: dict[str, Optimizer]
    schedulers: dict[str, object] = field(default_factory=dict)


def _overrides(cfg: DictConfig, players: Mapping[str, nn.Module]) -> dict[str, dict]:
    raw = cfg.get("players") or {}
    raw = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else dict(raw)
    unknown = set(raw) - set(players)
    if unknown:
        raise ConfigError(
            f"optimizer.players: unknown player(s) {sorted(unknown)}; this model's players are {list(players)}"
        )
    return {name: dict(raw.get(name) or {}) for name in players}


def _trainable(module: nn.Module, name: str) -> list[nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"player {name!r} has no trainable parameters")
    return params


def _instantiated(value):
    """Accept both a config node (instantiated here) and what Hydra already instantiated."""
    if isinstance(value, (DictConfig, dict)) and "_target_" in value:
        return hydra.utils.instantiate(value)
    return value


def build_optimizers(cfg: Mapping, players: Mapping[str, nn.Module]) -> PlayerOptimizers:
    """`cfg` is the `optimizer` group: a config node, or the dict Hydra made of it (partials inside)."""
    if cfg is None or cfg.get("optimizer") is None:
        raise ConfigError("optimizer.optimizer: missing; pick an optimizer group, e.g. optimizer=adam")
    factory = _instantiated(cfg["optimizer"])
    if not callable(factory) or not hasattr(factory, "func"):
        raise ConfigError("optimizer.optimizer must set `_partial_: true` (it is called with the parameters)")
    overrides = _overrides(cfg, players)
    lookahead = cfg.get("lookahead")
    try:
        if is_game_optimizer(factory):
            groups = [{"params": _trainable(m, n), "player": n, **overrides[n]} for n, m in players.items()]
            optimizers = {JOINT: factory(groups)}
        else:
            optimizers = {n: factory(_trainable(m, n), **overrides[n]) for n, m in players.items()}
    except TypeError as err:  # an unknown keyword in the config
        raise ConfigError(f"optimizer: {err}") from err
    except ValueError as err:  # the optimizer's own range checks
        raise ConfigError(f"optimizer: {err}") from err
    if lookahead is not None:
        wrap = _instantiated(lookahead)
        optimizers = {n: wrap(o) for n, o in optimizers.items()}
    schedulers = {}
    if cfg.get("scheduler") is not None:
        make = _instantiated(cfg["scheduler"])
        schedulers = {n: make(o) for n, o in optimizers.items()}
    return PlayerOptimizers(joint=is_game_optimizer(factory), optimizers=optimizers, schedulers=schedulers)
