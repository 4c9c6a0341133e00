"""Resuming a run: the original run's directory, its config, and its logger identity."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from src.utils.errors import UserError

RUN_INFO = "run.json"


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, from another version or another model."""


def check_checkpoint(ckpt_path: str) -> Path:
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path: no checkpoint at {path} (expected e.g. <run_dir>/checkpoints/last.ckpt)")
    return path


def load_checkpoint(ckpt_path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint as plain data (weights_only: no pickled code runs), checked to be one that this
    project's src.run wrote (a Lightning checkpoint with the run's config). ``mmap`` maps the tensors
    instead of reading them (a cheap check of a large file)."""
    import torch

    from src.metrics.backbones import load_error_reason

    path = check_checkpoint(str(ckpt_path))
    if path.stat().st_size == 0:
        raise CheckpointError(f"ckpt_path: {path} is empty (0 bytes): not a checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - truncated, not a torch file, or pickled objects
        reason = ("not the zip archive torch.save writes" if "_use_new_zipfile_serialization" in str(err)
                  else load_error_reason(err))
        raise CheckpointError(f"ckpt_path: {path} is not a readable checkpoint ({reason}); it may be corrupt or "
                              "truncated, or hold objects other than plain data") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"ckpt_path: {path} is not a Lightning checkpoint (no state_dict)")
    run_config = ckpt.get("run_config")
    if not isinstance(run_config, dict) or not isinstance(run_config.get("config"), dict):
        raise CheckpointError(f"ckpt_path: {path} has no run_config (the resolved config that the run is rebuilt "
                              "from): it was not written by this project's src.run, or by an older version of it")
    return ckpt


def held_model(ckpt: dict) -> tuple[str | None, str | None]:
    """(the model group option, the model class) of a checkpoint's run."""
    run_config = ckpt["run_config"]
    target = ((run_config.get("config") or {}).get("model") or {}).get("_target_")
    return (run_config.get("choices") or {}).get("model"), target


def check_resume_arguments(argv: list[str]) -> None:
    """Before Hydra creates anything (a run directory, a wandb run): a ``ckpt_path=`` on the command line
    must be a readable checkpoint of this project, of the model asked for (``model=`` on the command line,
    or for a checkpoint outside a run directory the model the command composes)."""
    values = {a.split("=", 1)[0].lstrip("+"): a.split("=", 1)[1] for a in argv if "=" in a and not a.startswith("-")}
    if not values.get("ckpt_path") or values["ckpt_path"] in ("null", "None"):
        return
    ckpt = load_checkpoint(values["ckpt_path"], mmap=True)
    held, target = held_model(ckpt)
    asked = values.get("model")
    in_run_dir = (run_dir_of(values["ckpt_path"]) / ".hydra" / "config.yaml").is_file()
    if asked is None and not in_run_dir:
        asked = _composed_model([a for a in argv if not a.startswith(("ckpt_path=", "hydra."))])
    if asked is not None and held is not None and asked != held:
        raise CheckpointError(f"ckpt_path: {values['ckpt_path']} holds a model={held} run ({target}), but "
                              f"model={asked} was asked for; resume it without model=, or start a new run")


def _composed_model(argv: list[str]) -> str | None:
    """The model group option the command composes (for a checkpoint without its run directory)."""
    from hydra import compose, initialize_config_dir

    from src.utils.config import register_configs

    register_configs()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=argv, return_hydra_config=True)
    return OmegaConf.select(cfg, "hydra.runtime.choices.model")


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
    without repeating its overrides (``~key`` removes one, e.g. a callback); with the run's group choices and
    overrides (the original ones, then this command's). Changing a config group on resume is refused."""
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
        if key in choices or key == "ckpt_path":
            continue
        if o.is_delete():  # ~key: e.g. drop a callback the run had
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(original, parent) if parent else original
            if node is not None and leaf in node:
                with open_dict(node):
                    del node[leaf]
            continue
        value = o.value()
        OmegaConf.update(original, key, value, merge=True, force_add=o.is_add() or o.is_force_add())
    original.ckpt_path = str(ckpt_path)
    new = [o for o in overrides if not o.startswith("ckpt_path=") and o not in old_overrides]
    return original, old_choices, [*old_overrides, *new]
