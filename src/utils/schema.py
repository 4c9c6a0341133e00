"""A typed schema for the composed config, checked before anything is built or trained.

Each rule names a key (``*`` matches any one level), the type it must have and the range it must lie
in. Every violation is reported at once, each with its key, so a bad sweep fails in a second rather
than an hour in. Modules re-check their own arguments too (so code that bypasses the CLI is safe).
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.utils.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    pattern: str
    types: tuple[type, ...]
    check: Callable[[Any], bool] | None = None
    expect: str = ""
    optional: bool = True  # a missing key or a null value passes


def _num(lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False):
    def check(v):
        if isinstance(v, float) and not math.isfinite(v):
            return False
        ok_lo = v > lo if lo_open else v >= lo
        ok_hi = v < hi if hi_open else v <= hi
        return ok_lo and ok_hi

    return check


INT = (int,)
NUM = (int, float)
STR = (str,)
BOOL = (bool,)

RULES: tuple[Rule, ...] = (
    Rule("seed", INT, _num(0, 2**32 - 1), "an integer in [0, 2**32-1]", optional=False),
    Rule("task_name", STR, lambda v: bool(v) and "/" not in v, "a non-empty name without '/'"),
    Rule("ckpt_path", STR, None, "a path to a .ckpt file"),
    Rule("validate_after_fit", BOOL, None, "true or false"),
    Rule("test_after_fit", BOOL, None, "true or false"),
    Rule("trainer.max_epochs", INT, _num(-1), "an integer >= -1"),
    Rule("trainer.max_steps", INT, _num(-1), "an integer >= -1"),
    Rule("trainer.devices", INT + STR + (ListConfig, list), None, "a count, 'auto' or a list of ids"),
    Rule("trainer.num_nodes", INT, _num(1), "an integer >= 1"),
    Rule("trainer.check_val_every_n_epoch", INT, _num(1), "an integer >= 1"),
    Rule("trainer.log_every_n_steps", INT, _num(1), "an integer >= 1"),
    Rule("dataset.batch_size", INT, _num(1), "an integer >= 1"),
    Rule("dataset.num_workers", INT, _num(0), "an integer >= 0"),
    Rule("dataset.val_batch_size", INT, _num(1), "an integer >= 1"),
    Rule("model.n_critic", INT, _num(1), "an integer >= 1"),
    Rule("model.latent_dim", INT, _num(1), "an integer >= 1"),
    Rule("model.gp_weight", NUM, _num(0), "a number >= 0"),
    Rule("model.num_eval_samples", INT, _num(1), "an integer >= 1"),
    Rule("model.loss", STR, None, "a loss name"),
    # Any optimizer hyper-parameter, in the shared settings or a player's own.
    Rule("optimizer.lr", NUM, _num(0, lo_open=True), "a number > 0"),
    Rule("optimizer.players.*.lr", NUM, _num(0, lo_open=True), "a number > 0"),
    Rule("optimizer.weight_decay", NUM, _num(0), "a number >= 0"),
    Rule("optimizer.players.*.weight_decay", NUM, _num(0), "a number >= 0"),
    Rule("optimizer.momentum", NUM, _num(0, 1), "a number in [0, 1]"),
    Rule("optimizer.players.*.momentum", NUM, _num(0, 1), "a number in [0, 1]"),
    Rule("optimizer.eps", NUM, _num(0, lo_open=True), "a number > 0"),
    Rule("optimizer.betas", (ListConfig, list, tuple),
         lambda v: len(v) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v),
         "two numbers in [0, 1)"),
    Rule("optimizer.players.*.betas", (ListConfig, list, tuple),
         lambda v: len(v) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v),
         "two numbers in [0, 1)"),
    Rule("optimizer.update", STR, lambda v: v in ("alternating", "simultaneous"),
         "alternating or simultaneous (or null: the model's own rule)"),
    Rule("optimizer.scheduler.total_iters", INT, _num(1), "an integer >= 1, or null for the run's iterations"),
)


def _walk(node: Any, prefix: str = ""):
    """Yield (dotted_key, value) for every key of a config, depth first."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            value = node._get_node(key)._value() if OmegaConf.is_missing(node, key) else node[key]
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, value
            if isinstance(value, DictConfig):
                yield from _walk(value, path)


def validate_config(cfg: DictConfig, rules: tuple[Rule, ...] = RULES) -> None:
    """Raise ConfigError listing every key whose value breaks a rule."""
    problems: list[str] = []
    values = dict(_walk(cfg))
    for rule in rules:
        matched = [k for k in values if fnmatch.fnmatchcase(k, rule.pattern) and k.count(".") == rule.pattern.count(".")]
        if not matched and not rule.optional:
            problems.append(f"{rule.pattern}: missing; expected {rule.expect}")
        for key in matched:
            value = values[key]
            if value is None:
                if not rule.optional:
                    problems.append(f"{key}: null; expected {rule.expect}")
                continue
            # bool is an int subclass: reject True where a number is meant.
            bad_type = not isinstance(value, rule.types) or (isinstance(value, bool) and bool not in rule.types)
            if bad_type:
                problems.append(f"{key}: got {value!r} ({type(value).__name__}); expected {rule.expect}")
            elif rule.check is not None and not rule.check(value):
                problems.append(f"{key}: got {value!r}; expected {rule.expect}")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


def require(condition: bool, key: str, message: str) -> None:
    """For modules: raise a ConfigError naming the config key when `condition` is false."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def choose(value: str, options, key: str) -> str:
    """Check that `value` is one of `options`; the error lists them and names the key."""
    if value not in options:
        raise ConfigError(f"{key}: unknown value {value!r}; choose one of: {', '.join(sorted(options))}")
    return value
