"""Every option of every config group and every experiment preset composes, validates and builds."""
from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from src.train import build_datamodule, build_model
from src.utils.schema import validate_config
from tests.helpers import CONF, EXPERIMENTS, compose

GROUPS = ["model", "dataset", "optimizer", "trainer", "logger", "callbacks", "paths", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Models only make sense with some datasets: pair each model family with a matching dataset.
DATASET_FOR_MODEL = {"gan_dcgan": "digits", "gan_mlp": "ring8"}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_validates(group, option, tmp_path):
    overrides = [f"{group}={option}"]
    if group == "model" and option in DATASET_FOR_MODEL:
        overrides.append(f"dataset={DATASET_FOR_MODEL[option]}")
    cfg = compose(overrides, output_dir=tmp_path)
    OmegaConf.resolve(cfg) if group not in ("model",) else None
    validate_config(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_validates_and_builds(experiment, tmp_path):
    cfg = compose([f"experiment={experiment}"], output_dir=tmp_path)
    validate_config(cfg)
    model = build_model(cfg)
    model.check_training()
    dm = build_datamodule(cfg)
    assert dm is not None
    header = (CONF.parent / "experiments" / f"{experiment}.yaml").read_text().splitlines()
    assert header[0].strip() == "# @package _global_", "presets are global packages"
    assert header[1].startswith("#") and len(header[1]) > 20, "presets start with a comment naming their claim"


@pytest.mark.parametrize("model", sorted(DATASET_FOR_MODEL))
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_gan_models_build_their_optimizers(model, optimizer, tmp_path):
    cfg = compose([f"model={model}", f"dataset={DATASET_FOR_MODEL[model]}", f"optimizer={optimizer}"],
                  output_dir=tmp_path)
    module = build_model(cfg)
    plan = module.plan_optimizers()
    assert not plan.joint and set(plan.optimizers) == {"generator", "discriminator"}


# ------------------------------------------------------------------------------ the config surface
OPTIMIZERS = options("optimizer")
ONE_PLAYER = {"classifier": "classifier", "segmenter": "segmenter"}


def _players(cfg) -> list[str]:
    return list(build_model(cfg, train=False).players)


def _lrs(module) -> dict[str, float]:
    """{player: lr of its param group at the player's own rate (lr_mult 1)} of the built optimizers."""
    plan = module.plan_optimizers()
    return {g.get("player", name): g["lr"] for name, o in plan.optimizers.items() for g in o.param_groups
            if g.get("lr_mult", 1.0) == 1.0}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_lr_and_per_player_lr_for_every_optimizer_option(optimizer, tmp_path):
    cfg = compose([f"optimizer={optimizer}", "optimizer.lr=1e-3", "optimizer.players.discriminator.lr=4e-4"],
                  output_dir=tmp_path)
    lrs = _lrs(build_model(cfg))
    assert lrs["discriminator"] == pytest.approx(4e-4, rel=1e-12)
    if optimizer != "hung":  # hung's discriminator has its own class and the shared lr is the segmenter's
        assert lrs["generator"] == pytest.approx(1e-3, rel=1e-12)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_lr_and_per_player_lr_for_every_preset(experiment, tmp_path):
    players = _players(compose([f"experiment={experiment}"], output_dir=tmp_path))
    last = players[-1]
    cfg = compose([f"experiment={experiment}", "optimizer.lr=1e-3", f"optimizer.players.{last}.lr=4e-4"],
                  output_dir=tmp_path)
    lrs = _lrs(build_model(cfg))
    assert lrs[last] == pytest.approx(4e-4, rel=1e-12)
    for other in players[:-1]:
        assert lrs[other] == pytest.approx(1e-3, rel=1e-12)


def test_the_optimizer_appears_once_in_the_resolved_config(tmp_path):
    cfg = compose(["experiment=scenes_semi"], output_dir=tmp_path)
    container = OmegaConf.to_container(cfg, resolve=True)
    assert "optimizer" not in container["model"] and "lr" in container["optimizer"]
    assert "optimizer" not in container["optimizer"]


def test_experiment_with_and_without_plus_compose_the_same_config(tmp_path):
    a = compose(["experiment=mlp_ring8"], output_dir=tmp_path)
    b = compose(["+experiment=mlp_ring8"], output_dir=tmp_path)
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)
    assert a.task_name == "mlp_ring8" and a.dataset.mixture == "ring8"


def test_the_bare_groups_are_the_default_run_preset(tmp_path):
    """`python -m src.run` and `experiment=dcgan_digits` train the same run (the preset pins the defaults),
    and a group chosen without a preset keeps its own settings (no default-run value leaks into it)."""
    bare = OmegaConf.to_container(compose([], output_dir=tmp_path))
    preset = OmegaConf.to_container(compose(["experiment=dcgan_digits"], output_dir=tmp_path))
    assert bare.pop("task_name") == "gan" and preset.pop("task_name") == "dcgan_digits"
    assert bare == preset
    hung = compose(["optimizer=hung"], output_dir=tmp_path)
    assert hung.optimizer.lr == OmegaConf.load(CONF / "optimizer" / "hung.yaml").lr != bare["optimizer"]["lr"] == 5e-4


#: what each debug preset caps: trainer keys that must be set to these values, and the most iterations
DEBUG_CAPS = {"fast_dev_run": ({"fast_dev_run": True}, 1), "limit": ({"limit_train_batches": 5}, 10),
              "overfit": ({"overfit_batches": 3}, 60), "profiler": ({"limit_train_batches": 20}, 20)}


@pytest.mark.parametrize("debug", sorted(DEBUG_CAPS))
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_preset_with_every_debug_option_is_capped(experiment, debug, tmp_path):
    import pytorch_lightning as pl

    cfg = compose([f"experiment={experiment}", f"debug={debug}"], output_dir=tmp_path)
    validate_config(cfg)
    keys, most = DEBUG_CAPS[debug]
    for key, value in keys.items():
        assert cfg.trainer[key] == value
    assert cfg.task_name == "debug"
    assert 1 <= cfg.trainer.max_steps <= most and cfg.trainer.max_epochs <= 20
    assert cfg.trainer.val_check_interval is None and cfg.trainer.check_val_every_n_epoch == 1
    # the preset's schedule, if any, follows the capped run
    if cfg.optimizer.scheduler is not None and "total_iters" in cfg.optimizer.scheduler:
        assert cfg.optimizer.scheduler.total_iters is None
    hardware = ("_target_", "default_root_dir", "accelerator", "devices", "num_nodes", "strategy", "sync_batchnorm")
    trainer = pl.Trainer(**{k: v for k, v in OmegaConf.to_container(cfg.trainer, resolve=True).items()
                            if k not in hardware}, logger=False, accelerator="cpu")
    assert trainer.max_steps <= most


@pytest.mark.parametrize("old,new", [
    ("optimizer.optimizer.lr=1e-3", "optimizer.lr"),
    ("+optimizer.optimizer.betas=[0.5,0.9]", "optimizer.lr"),
    ("model.simultaneous=false", "optimizer.update"),
    ("optimizer.schedule=inv_sqrt", "optimizer.scheduler"),
    ("callbacks.summary=null", "always written"),
])
def test_old_keys_fail_naming_the_new_one(old, new):
    from src.utils.cli import normalise_argv
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(new)):
        normalise_argv([old])


def test_an_old_key_in_a_config_file_names_the_new_one(tmp_path):
    """An experiment file still written with the old nesting fails naming the new key."""
    from omegaconf import open_dict

    from src.utils.errors import ConfigError

    cfg = compose([], output_dir=tmp_path)
    with open_dict(cfg):
        cfg.optimizer.optimizer = {"lr": 1e-3}
    with pytest.raises(ConfigError, match=r"optimizer\.optimizer\.lr -> optimizer\.lr"):
        build_model(cfg)
