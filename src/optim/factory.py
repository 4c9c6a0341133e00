"""Build each player's optimizer (or one joint game optimizer) from the `optimizer` config group.

A group file holds a ``_partial_`` optimizer, optional per-player overrides and an optional scheduler::

    optimizer: {_target_: torch.optim.Adam, _partial_: true, lr: 2e-4, betas: [0.5, 0.999]}
    players: {discriminator: {lr: 4e-4}}     # e.g. two time-scale learning rates
    scheduler: null                           # a _partial_ torch.optim.lr_scheduler, stepped per step

If the optimizer is a :class:`~src.optim.base.GameOptimizer`, one optimizer is built over all
players (one param group per player, the overrides applied to the groups); otherwise one per player.

A player's override that carries its own ``_target_`` (and ``_partial_: true``) gives that player its
own optimizer class, built from the override alone (the shared keywords are not inherited, as they may
not apply to another class), e.g. SGD for a segmenter and Adam for its discriminator::

    players: {discriminator: {_target_: torch.optim.Adam, _partial_: true, lr: 1e-4, betas: [0.9, 0.99]}}

A module may split a player's parameters into param groups with learning-rate multipliers
(``param_groups={player: [{"params": [...], "lr_mult": 10.0, "group": "head"}, ...]}``, e.g. a
segmentation head at 10x the backbone's rate): each group's lr is the player's lr times its
``lr_mult``; trainable parameters in no group are added as a group of their own at the player's lr.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

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


def _is_partial(value) -> bool:
    return callable(value) and hasattr(value, "func")


def _overrides(cfg: DictConfig, players: Mapping[str, nn.Module]) -> dict[str, dict]:
    raw = cfg.get("players") or {}
    unknown = set(raw) - set(players)
    if unknown:
        raise ConfigError(
            f"optimizer.players: unknown player(s) {sorted(unknown)}; this model's players are {list(players)}"
        )
    out = {}
    for name in players:
        value = raw.get(name) or {}
        if _is_partial(value):  # the player's own optimizer, already instantiated by Hydra
            out[name] = {"_target_": value}
            continue
        value = OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig) else dict(value)
        out[name] = value
    return out


def _own_factory(name: str, override: dict):
    """The player's own optimizer partial if its override has a `_target_`, else None."""
    target = override.get("_target_")
    if target is None:
        return None
    if _is_partial(target):
        return target
    try:
        made = hydra.utils.instantiate({**override, "_partial_": True})
    except Exception as err:  # noqa: BLE001 - an unknown class or keyword in the config
        raise ConfigError(f"optimizer.players.{name}: {err}") from err
    return made


def _grouped(module: nn.Module, name: str, spec) -> list:
    """The player's parameters as param groups (from `spec`), or one flat list if there is no spec."""
    if not spec:
        return _trainable(module, name)
    groups, seen = [], set()
    for g in spec:
        params = [p for p in g["params"] if p.requires_grad]
        mult = float(g.get("lr_mult", 1.0))
        if not mult > 0:
            raise ConfigError(f"player {name!r}: lr_mult must be > 0, got {mult}")
        seen.update(id(p) for p in params)
        if params:
            groups.append({**g, "params": params, "lr_mult": mult})
    rest = [p for p in _trainable(module, name) if id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr_mult": 1.0})
    return groups


def _apply_lr_mult(optimizer: Optimizer) -> None:
    for group in optimizer.param_groups:
        mult = group.get("lr_mult", 1.0)
        if mult != 1.0:
            group["lr"] = group["lr"] * mult


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


def build_optimizers(cfg: Mapping, players: Mapping[str, nn.Module],
                     param_groups: Mapping[str, Sequence[Mapping]] | None = None) -> PlayerOptimizers:
    """`cfg` is the `optimizer` group: a config node, or the dict Hydra made of it (partials inside).
    `param_groups` (optional): per player, param groups with an ``lr_mult`` (see the module docstring)."""
    if cfg is None or cfg.get("optimizer") is None:
        raise ConfigError("optimizer.optimizer: missing; pick an optimizer group, e.g. optimizer=adam")
    factory = _instantiated(cfg["optimizer"])
    if not callable(factory) or not hasattr(factory, "func"):
        raise ConfigError("optimizer.optimizer must set `_partial_: true` (it is called with the parameters)")
    overrides = _overrides(cfg, players)
    own = {n: _own_factory(n, overrides[n]) for n in players}
    param_groups = param_groups or {}
    lookahead = cfg.get("lookahead")
    try:
        if is_game_optimizer(factory):
            if any(f is not None for f in own.values()):
                raise ConfigError("optimizer.players: a joint game optimizer updates every player; a player's own "
                                  "optimizer class (_target_) needs per-player optimizers")
            if any(float(g.get("lr_mult", 1.0)) != 1.0 for spec in param_groups.values() for g in spec):
                raise ConfigError(f"a joint game optimizer ({getattr(factory.func, '__name__', factory)}) has one "
                                  "param group per player: learning-rate multipliers (e.g. model.head_lr_mult) "
                                  "must be 1")
            groups = [{"params": _trainable(m, n), "player": n, **overrides[n]} for n, m in players.items()]
            optimizers = {JOINT: factory(groups)}
        else:
            optimizers = {}
            for n, m in players.items():
                make, kwargs = (own[n], {}) if own[n] is not None else (factory, overrides[n])
                optimizers[n] = make(_grouped(m, n, param_groups.get(n)), **kwargs)
                _apply_lr_mult(optimizers[n])
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
