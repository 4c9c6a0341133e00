"""Every option of every config group and every experiment preset composes, validates and builds."""
from __future__ import annotations

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
    cfg = compose([f"+experiment={experiment}"], output_dir=tmp_path)
    validate_config(cfg)
    model = build_model(cfg)
    assert hasattr(model, "training_step")
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
