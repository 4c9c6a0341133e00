"""Resuming a run: the original run's directory, its config, and its logger identity."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.utils.errors import UserError

RUN_INFO = "run.json"


def check_checkpoint(ckpt_path: str) -> Path:
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt_path: no checkpoint at {path} (expected e.g. <run_dir>/checkpoints/last.ckpt)")
    return path


def run_dir_of(ckpt_path: str | Path) -> Path:
    """<run_dir>/checkpoints/x.ckpt -> <run_dir>."""
    return Path(ckpt_path).resolve().parent.parent


def read_run_info(run_dir: Path) -> dict:
    path = run_dir / RUN_INFO
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def write_run_info(run_dir: Path, info: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_INFO).write_text(json.dumps(info, indent=2, default=str))


def resume_config(cfg: DictConfig, ckpt_path: str, overrides: list[str],
                  choices: dict) -> tuple[DictConfig, dict, list[str]]:
    """The original run's config (from <run_dir>/.hydra/config.yaml) with this command's plain
    `key=value` overrides applied on top, so `src.run ckpt_path=...` continues the same experiment
    without repeating its overrides; with the run's group choices and overrides (the original ones, then
    this command's). Changing a config group on resume is refused."""
    saved = run_dir_of(ckpt_path) / ".hydra" / "config.yaml"
    if not saved.is_file():
        return cfg, choices, overrides  # a checkpoint from elsewhere: the config composed now is used as it is
    original = OmegaConf.load(saved)
    old_choices = dict(choices)
    saved_hydra = saved.parent / "hydra.yaml"
    if saved_hydra.is_file():
        old = OmegaConf.to_container(OmegaConf.select(OmegaConf.load(saved_hydra), "hydra.runtime.choices") or {})
        for group, option in choices.items():
            if group.startswith("hydra") or group not in old:
                continue
            explicitly_set = any(o.lstrip("+~").split("=")[0] == group for o in overrides)
            if explicitly_set and old[group] != option:
                raise UserError(
                    f"{group}={option}: a resumed run keeps its config groups ({group}={old[group]}); "
                    "start a new run to change them"
                )
        old_choices = {k: v for k, v in old.items() if not k.startswith("hydra/") and k != "hydra"}
    saved_overrides = saved.parent / "overrides.yaml"
    old_overrides = list(OmegaConf.load(saved_overrides)) if saved_overrides.is_file() else []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    for o in parsed:
        key = o.key_or_group
        if key in choices or key == "ckpt_path" or o.is_delete():
            continue
        value = o.value()
        OmegaConf.update(original, key, value, merge=True, force_add=o.is_add() or o.is_force_add())
    original.ckpt_path = str(ckpt_path)
    new = [o for o in overrides if not o.startswith("ckpt_path=") and o not in old_overrides]
    return original, old_choices, [*old_overrides, *new]
