"""The analytic-games LightningModule (src/models/game.py) and its step-only data module: the games'
equilibria, exact dynamics through Lightning (joint CGD, simultaneous and alternating GDA), exact
resume mid-epoch, and the CLI: CGD converges and SGD diverges on the bilinear preset."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from src.data.steps import StepsDataModule
from src.models.game import Game
from src.train import build_datamodule, build_model
from src.utils.errors import ConfigError
from tests.helpers import compose

F64 = torch.float64
CSV = "logger=csv"


def build(overrides: list[str], tmp_path):
    cfg = compose(["experiment=bilinear", *overrides], output_dir=tmp_path)
    return build_model(cfg), build_datamodule(cfg)


def trainer(**kw) -> pl.Trainer:
    base = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False)
    base.update(kw)
    return pl.Trainer(**base)


def position(model: Game) -> tuple[float, float]:
    return float(model.x.weight[0]), float(model.y.weight[0])


# -------------------------------------------------------------------------------------------- games
@pytest.mark.parametrize("game", ["bilinear", "quadratic_cg", "convex_concave"])
def test_origin_is_a_stationary_point_of_every_game(game):
    model = Game(game=game, dim=3, matrix="random", x0=0.0, y0=0.0, mu=0.5)
    x, y = model.x.weight, model.y.weight
    gx, gy = torch.autograd.grad(model.f(), [x, y])
    assert torch.equal(gx, torch.zeros(3, dtype=F64)) and torch.equal(gy, torch.zeros(3, dtype=F64))
    assert model.distance_to_equilibrium() == 0
    assert model.x.weight.dtype == F64 and set(model.players) == {"x", "y"}


def test_quadratic_cg_is_a_local_nash_equilibrium_with_the_stated_curvatures():
    model = Game(game="quadratic_cg", dim=1, x0=0.0, y0=0.0)
    hess = torch.autograd.functional.hessian(lambda x, y: model.f(x, y), (model.x.weight, model.y.weight))
    assert float(hess[0][0]) == 200.0 and float(hess[1][1]) == -2.0 and float(hess[0][1]) == 0.0


def test_bad_game_arguments_name_their_key():
    with pytest.raises(ConfigError, match="model.game"):
        Game(game="nope")
    with pytest.raises(ConfigError, match="model.x0"):
        Game(dim=2, x0=[1.0, 2.0, 3.0])


def test_steps_datamodule_yields_n_batches_and_one_val_batch():
    dm = StepsDataModule(steps_per_epoch=7)
    dm.setup()
    assert len(dm.train_dataloader()) == 7 and len(dm.val_dataloader()) == 1


# ------------------------------------------------------------------------------- dynamics, in process
def test_joint_cgd_through_lightning_contracts_exactly(tmp_path):
    model, dm = build(["optimizer=cgd", "optimizer.lr=1.0", "dataset.steps_per_epoch=10",
                       "optimizer.tol=1e-28"], tmp_path)
    trainer(max_epochs=1).fit(model, datamodule=dm)
    assert float(model.distance_to_equilibrium()) == pytest.approx(math.sqrt(2) * 2.0**-5, rel=1e-9, abs=0)


def test_simultaneous_gda_spirals_out_and_alternating_gda_cycles(tmp_path):
    model, dm = build(["optimizer=sgd", "optimizer.lr=0.1", "dataset.steps_per_epoch=50"], tmp_path)
    trainer(max_epochs=1).fit(model, datamodule=dm)
    assert float(model.distance_to_equilibrium()) == pytest.approx(math.sqrt(2) * 1.01**25, rel=1e-9)
    # alternating at lr 1: (1,1) -> (0,1) -> (-1,0) -> (-1,-1) -> (0,-1): a cycle of period 6
    model, dm = build(["optimizer=sgd", "optimizer.lr=1.0", "optimizer.update=alternating",
                       "dataset.steps_per_epoch=4"], tmp_path)
    trainer(max_epochs=1).fit(model, datamodule=dm)
    assert position(model) == (0.0, -1.0)


@pytest.mark.parametrize("optimizer", ["acgd", "lookahead_extra_adam", "optimistic_adam"])
def test_resume_mid_epoch_is_exact(tmp_path, optimizer):
    """A checkpoint taken mid-epoch (batch 8 of 2 x 6) resumes to the same parameters, bitwise."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    overrides = [f"optimizer={optimizer}", "optimizer.lr=0.05", "dataset.steps_per_epoch=6",
                 "model.dim=3", "model.matrix=random"]
    model, dm = build(overrides, tmp_path)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=8, save_top_k=-1, filename="mid")
    trainer(max_epochs=2, enable_checkpointing=True, callbacks=[ckpt]).fit(model, datamodule=dm)
    straight = (model.x.weight.detach().clone(), model.y.weight.detach().clone())

    model, dm = build(overrides, tmp_path)
    t = trainer(max_epochs=2)
    t.fit(model, datamodule=dm, ckpt_path=str(tmp_path / "ckpt" / "mid.ckpt"))
    assert t.global_step == 12  # iterations, whatever the optimizer
    assert torch.equal(model.x.weight.detach(), straight[0]) and torch.equal(model.y.weight.detach(), straight[1])


# -------------------------------------------------------------------------------------------- CLI
def _summary_distance(result) -> float:
    assert result.returncode == 0, result.output[-3000:]
    assert result.summary["status"] == "finished"
    final = result.metric("train/distance_to_equilibrium")
    assert result.metric("val/distance_to_equilibrium") == pytest.approx(final, rel=1e-6)
    return final


def test_cli_bilinear_cgd_converges_and_sgd_diverges(cli):
    """f = x y from (1, 1), lr 0.3, 100 steps: CGD contracts by 1/sqrt(1.09) per step, simultaneous GDA
    expands by sqrt(1.09)."""
    short = ["experiment=bilinear", CSV, "optimizer.lr=0.3", "dataset.steps_per_epoch=20",
             "trainer.max_epochs=5"]
    cgd = _summary_distance(cli(*short, "optimizer=cgd"))
    sgd = _summary_distance(cli(*short, "optimizer=sgd"))
    assert cgd == pytest.approx(math.sqrt(2) * 1.09**-50, rel=1e-6, abs=0)
    assert sgd == pytest.approx(math.sqrt(2) * 1.09**50, rel=1e-6)
