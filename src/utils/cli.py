"""The command line before Hydra reads it: `+experiment=NAME` (the older spelling) means
`experiment=NAME`, and keys that moved fail with a message that names their new place."""
from __future__ import annotations

from src.utils.errors import ConfigError

#: old key (or key prefix ending in ".") -> where it went
MOVED = {
    "optimizer.optimizer.": "the optimizer's settings moved up one level: optimizer.lr, optimizer.betas, ... "
                            "(optimizer.optimizer.lr -> optimizer.lr)",
    "model.optimizer": "the optimizer is the `optimizer` group only (optimizer=adam, optimizer.lr=...)",
    "model.simultaneous": "the update rule is optimizer.update=simultaneous or optimizer.update=alternating",
    "callbacks.summary": "summary.json is always written; it is not an optional callback",
    "optimizer.schedule": "NCG's step-size schedules are the group's scheduler: e.g. "
                          "optimizer.scheduler='{_target_: src.optim.schedules.PowerDecay, power: 0.5}' "
                          "(conf/optimizer/ncg.yaml lists the paper's four)",
}
for _key in ("exp_decay", "step_every", "step_factor"):
    MOVED[f"optimizer.{_key}"] = MOVED["optimizer.schedule"]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def normalise_argv(argv: list[str]) -> list[str]:
    """`argv` with `+experiment=` read as `experiment=`; a ConfigError for a key that moved."""
    out = []
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            key = _key(arg)
            for old, new in MOVED.items():
                if key == old.rstrip(".") or (old.endswith(".") and key.startswith(old)):
                    raise ConfigError(f"{key}: {new}")
            if arg.startswith("+experiment="):
                arg = arg[1:]
        out.append(arg)
    return out
