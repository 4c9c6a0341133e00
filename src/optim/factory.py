"""Build each player's optimizer (or one joint game optimizer) and scheduler from the `optimizer` group.

A group file names the optimizer class and its settings at the top level; the keys below are shared by
every group (conf/config.yaml places them, src/utils/config.py: ``OPTIMIZER_COMMON``)::

    _target_: torch.optim.Adam
    lr: 2.0e-4
    betas: [0.5, 0.999]
    players: {}          # per-player settings: players.discriminator.lr=4e-4 (any key, no `+` needed)
    scheduler: null      # e.g. {_target_: torch.optim.lr_scheduler.PolynomialLR, total_iters: ..., power: 0.9}
    lookahead: null      # e.g. {_target_: src.optim.lookahead.Lookahead, k: 5, alpha: 0.5}
    update: null         # alternating | simultaneous (per-player optimizers); null: the model's own rule
    order: null          # alternating: players in update order; null: the model's order

If the class is a :class:`~src.optim.base.GameOptimizer` (CGD, ACGD, extragradient, ...), one optimizer is
built over all players (one param group per player, each player's settings applied to its group) and the
update is joint; otherwise one optimizer per player.

A player's settings that carry their own ``_target_`` give that player its own optimizer class, built from
those settings alone (the shared keywords are not inherited, as they may not apply to another class), e.g.
SGD for a segmenter and Adam for its discriminator (conf/optimizer/hung.yaml)::

    players: {discriminator: {_target_: torch.optim.Adam, lr: 1e-4, betas: [0.9, 0.99]}}

A module may split a player's parameters into param groups with learning-rate multipliers
(``param_groups={player: [{"params": [...], "lr_mult": 10.0, "group": "head"}, ...]}``, e.g. a segmentation
head at 10x the backbone's rate): each group's lr is the player's lr times its ``lr_mult``; trainable
parameters in no group form a group of their own at the player's lr.

Schedulers step once per iteration for every player (src/models/base.py). A schedule whose length is left
null (``total_iters`` of PolynomialLR / LinearLR, ``T_max`` of CosineAnnealingLR, ``total_steps`` of
OneCycleLR) runs over the whole run: ``trainer.max_steps`` iterations, or epochs x batches per epoch, as
capped by the debug presets.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Iterator, Mapping, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim import Optimizer

from src.optim.base import is_game_optimizer
from src.utils.cli import MOVED
from src.utils.errors import ConfigError

JOINT = "joint"
#: a scheduler's keyword for its length: left null in the config, it is the run's iterations
SCHEDULE_LENGTH = {"PolynomialLR": "total_iters", "LinearLR": "total_iters", "CosineAnnealingLR": "T_max",
                   "OneCycleLR": "total_steps"}
#: keys of the optimizer group that are not the optimizer's own keyword arguments
COMMON_KEYS = ("players", "scheduler", "lookahead", "update", "order")
UPDATES = ("alternating", "simultaneous")


def _plain(node) -> dict:
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return dict(node)


def _instantiate(spec: Mapping, *args, key: str):
    """`spec` (a dict with `_target_`) called with `args` and its other keys; errors name `key`."""
    spec = {k: v for k, v in spec.items() if k != "_partial_"}
    try:
        return hydra.utils.instantiate(spec, *args, _convert_="all")
    except Exception as err:  # noqa: BLE001 - an unknown class, a bad keyword or a range check
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: {cause}") from err


class OptimizerGroup:
    """The `optimizer` config group, read once: the optimizer class and its shared settings, each
    player's settings, the scheduler, the lookahead wrapper and the update rule."""

    def __init__(self, cfg: Mapping | None):
        cfg = _plain(cfg)
        if "optimizer" in cfg:
            raise ConfigError(f"optimizer.optimizer: {MOVED['optimizer.optimizer.']}")
        if not cfg.get("_target_"):
            raise ConfigError("optimizer._target_: missing; pick an optimizer group, e.g. optimizer=adam")
        self.shared = {k: v for k, v in cfg.items() if k not in COMMON_KEYS}
        self.players: dict[str, dict] = {str(k): _plain(v) for k, v in (cfg.get("players") or {}).items()}
        self.scheduler = _plain(cfg.get("scheduler")) or None
        self.lookahead = _plain(cfg.get("lookahead")) or None
        self.update = cfg.get("update")
        if self.update is not None and self.update not in UPDATES:
            raise ConfigError(f"optimizer.update: unknown value {self.update!r}; choose one of: {', '.join(UPDATES)} "
                              "(or null for the model's own rule)")
        self.order = list(cfg["order"]) if cfg.get("order") is not None else None
        try:
            self.cls = hydra.utils.get_class(str(self.shared["_target_"]))
        except Exception as err:  # noqa: BLE001 - not importable
            raise ConfigError(f"optimizer._target_: cannot import {self.shared['_target_']!r} ({err})") from err
        self.joint = is_game_optimizer(self.cls)

    @property
    def name(self) -> str:
        return self.cls.__name__

    def _check_players(self, players: Sequence[str]) -> None:
        unknown = set(self.players) - set(players)
        if unknown:
            raise ConfigError(f"optimizer.players: unknown player(s) {sorted(unknown)}; this model's players are "
                              f"{list(players)}")

    def build(self, players: Mapping[str, nn.Module], param_groups: Mapping[str, Sequence[Mapping]] | None = None,
              iterations: int | None = None) -> "PlayerOptimizers":
        """The optimizers (one per player, or one joint) and their schedulers, as one Lightning optimizer.
        `iterations`: the run's length, for a schedule whose length is null (None: not known yet, e.g. a
        configuration check before the trainer exists; a placeholder length is used)."""
        self._check_players(list(players))
        param_groups = param_groups or {}
        if self.joint:
            optimizers = {JOINT: self._build_joint(players, param_groups)}
        else:
            optimizers = {n: self._build_player(n, m, param_groups.get(n)) for n, m in players.items()}
        if self.lookahead is not None:
            optimizers = {n: _instantiate(self.lookahead, o, key="optimizer.lookahead") for n, o in optimizers.items()}
        schedulers = {}
        if self.scheduler is not None:
            spec = self.scheduler_spec(iterations)
            schedulers = {n: _instantiate(spec, o, key="optimizer.scheduler") for n, o in optimizers.items()}
        return PlayerOptimizers(optimizers, schedulers, joint=self.joint)

    def scheduler_spec(self, iterations: int | None) -> dict:
        spec = dict(self.scheduler)
        length = SCHEDULE_LENGTH.get(str(spec.get("_target_", "")).rsplit(".", 1)[-1])
        if length is not None and spec.get(length) is None:
            if iterations is not None and not (0 < iterations < float("inf")):
                raise ConfigError(f"optimizer.scheduler.{length}: null means the run's iterations, but this run has "
                                  "no fixed length (trainer.max_steps and trainer.max_epochs are both -1); set one")
            spec[length] = int(iterations) if iterations is not None else 1
        return spec

    def _build_joint(self, players: Mapping[str, nn.Module], param_groups: Mapping) -> Optimizer:
        if len(players) < 2:
            raise ConfigError(f"optimizer: {self.name} is a joint game optimizer; it needs two players and this "
                              f"model has one ({', '.join(players)}): use a per-player optimizer such as sgd, "
                              "adam or ncg")
        if any("_target_" in s for s in self.players.values()):
            raise ConfigError("optimizer.players: a joint game optimizer updates every player; a player's own "
                              "optimizer class (_target_) needs per-player optimizers")
        if any(float(g.get("lr_mult", 1.0)) != 1.0 for spec in param_groups.values() for g in spec):
            raise ConfigError(f"a joint game optimizer ({self.name}) has one param group per player: learning-rate "
                              "multipliers (e.g. model.head_lr_mult) must be 1")
        if self.update is not None:
            raise ConfigError(f"optimizer.update={self.update}: {self.name} is a joint game optimizer (its update "
                              "is joint); leave optimizer.update null")
        groups = [{"params": _trainable(m, n), "player": n, **self.players.get(n, {})} for n, m in players.items()]
        return _instantiate(self.shared, groups, key="optimizer")

    def _build_player(self, name: str, module: nn.Module, spec) -> Optimizer:
        own = self.players.get(name, {})
        params = _grouped(module, name, spec)
        if "_target_" in own:  # the player's own class, from its own settings alone
            optimizer = _instantiate(_fused_on_gpus(own, module), params, key=f"optimizer.players.{name}")
        else:
            optimizer = _instantiate(_fused_on_gpus({**self.shared, **own}, module), params, key="optimizer")
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_mult", 1.0)
        return optimizer


#: torch optimizers with fused CUDA kernels (one kernel for all parameters of a step)
FUSED = ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD")


def _fused_on_gpus(spec: dict, module: nn.Module) -> dict:
    """`spec` with ``fused: true`` when it names a torch optimizer with fused kernels, the player's
    parameters are on a CUDA device and the config chose neither ``fused`` nor ``foreach``: torch's own
    default there is the slower multi-tensor path. On the CPU, torch's default stays (so CPU runs give the
    numbers they always gave); ``optimizer.fused=true`` asks for the fused CPU kernel."""
    on_cuda = all(p.is_cuda for p in module.parameters())
    if spec.get("_target_") in FUSED and on_cuda and spec.get("fused") is None and spec.get("foreach") is None:
        return {**spec, "fused": True}
    return spec


def _trainable(module: nn.Module, name: str) -> list[nn.Parameter]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"player {name!r} has no trainable parameters")
    return params


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


class _States(MutableMapping):
    """The per-parameter states of several optimizers seen as one (what Lightning moves between devices)."""

    def __init__(self, optimizers: Sequence[Optimizer]):
        self._optimizers = list(optimizers)

    def _owner(self, key) -> Optimizer:
        for optimizer in self._optimizers:
            if key in optimizer.state:
                return optimizer
        raise KeyError(key)

    def __getitem__(self, key):
        return self._owner(key).state[key]

    def __setitem__(self, key, value) -> None:
        self._owner(key).state[key] = value

    def __delitem__(self, key) -> None:
        del self._owner(key).state[key]

    def __iter__(self) -> Iterator:
        for optimizer in self._optimizers:
            yield from optimizer.state

    def __len__(self) -> int:
        return sum(len(o.state) for o in self._optimizers)


class PlayerOptimizers(Optimizer):
    """Every player's optimizer (or the one joint game optimizer) and scheduler, as the single optimizer
    Lightning knows. The module steps the players' own optimizers during an iteration and then this one
    once, so that ``trainer.global_step`` (and ``trainer.max_steps``, checkpoint names, every step count)
    counts iterations, whatever the number of players and updates per iteration. Its ``param_groups`` are
    the players' own (the same dicts), its ``state_dict`` holds every optimizer's and scheduler's state."""

    def __init__(self, optimizers: Mapping[str, Optimizer], schedulers: Mapping[str, object] | None = None,
                 joint: bool = False):
        self.optimizers = dict(optimizers)
        self.schedulers = dict(schedulers or {})
        self.joint = bool(joint)
        params = [p for o in self.optimizers.values() for g in o.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.param_groups = [g for o in self.optimizers.values() for g in o.param_groups]
        self.state = _States(list(self.optimizers.values()))

    def step(self, closure=None):  # type: ignore[override]
        """One iteration done (the players' optimizers have stepped); runs `closure` if given."""
        return closure() if closure is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def step_schedulers(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    def state_dict(self) -> dict:
        return {"optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
                "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("optimizers")
        if not isinstance(saved, dict) or set(saved) != set(self.optimizers):
            raise ValueError(f"the checkpoint's optimizers {sorted(saved or {})} are not this run's "
                             f"{sorted(self.optimizers)} (was the optimizer group or the model changed?)")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(saved[name])
        for name, scheduler in self.schedulers.items():
            if name in state_dict.get("schedulers", {}):
                scheduler.load_state_dict(state_dict["schedulers"][name])

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {type(o).__name__}" for n, o in self.optimizers.items())
        return f"PlayerOptimizers({inner})"

