"""Supervised segmentation: training with any per-player optimizer from the optimizer group, the head
learning-rate multiplier and poly schedule, whole-image and sliding-window inference, metrics logged."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from src.models.segmentation import Segmentation, _starts, slide_inference
from src.networks.unet import UNet
from src.train import build_model
from src.utils.errors import ConfigError
from tests.helpers import CONF, compose
from tests.models.seg_fakes import FakeSegData

ADAM_POLY = {"_target_": "torch.optim.Adam", "lr": 1e-3,
             "scheduler": {"_target_": "torch.optim.lr_scheduler.PolynomialLR", "total_iters": 10, "power": 0.9}}


def _trainer(max_steps=3, **kwargs):
    return pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0, **kwargs)


def _model(optimizer=None, **kwargs):
    torch.manual_seed(0)
    return Segmentation(UNet(4, base_width=4, depth=2), 4, optimizer=OmegaConf.create(optimizer or ADAM_POLY), **kwargs)


def test_training_logs_loss_and_dataset_level_metrics():
    model = _model()
    trainer = _trainer(max_steps=4, log_every_n_steps=1)
    trainer.fit(model, datamodule=FakeSegData())
    m = trainer.callback_metrics
    for key in ("train/loss", "val/mIoU", "val/mAcc", "val/aAcc", "val/loss", "lr/segmenter"):
        assert key in m, key
    assert any(k.startswith("val/IoU_") for k in m)
    assert "val/IoU_background" in m or "val/IoU_red" in m  # class names from the data module
    assert trainer.global_step == 4


def test_head_lr_multiplier_and_poly_schedule():
    model = _model(head_lr_mult=10.0)
    opt = model.plan_optimizers().optimizers["segmenter"]
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == pytest.approx([1e-3, 1e-2])
    head = next(g for g in opt.param_groups if g.get("group") == "head")
    assert {id(p) for p in head["params"]} == {id(p) for p in model.segmenter.head_parameters()}
    trainer = _trainer(max_steps=4)
    trainer.log_every_n_steps = 1
    trainer.fit(model, datamodule=FakeSegData())
    # poly: lr_0 (1 - t/T)^0.9 after t = 4 of T = 10 iterations, both groups alike
    opt = model.plan_optimizers().optimizers["segmenter"]
    expected = (1 - 4 / 10) ** 0.9
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-3 * expected, 1e-2 * expected])
    # the lr logged at iteration 4 is the one that iteration used, before the schedule's 4th step
    assert trainer.callback_metrics["lr/segmenter/head"].item() == pytest.approx(1e-2 * (1 - 3 / 10) ** 0.9, rel=1e-5)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "optimizer").glob("*.yaml")))
def test_every_optimizer_group_option_builds_for_the_segmenter(option, tmp_path):
    """Per-player optimizers (sgd, adam, ncg, ...) train the segmenter; joint game optimizers need two
    players and are refused with a clear error."""
    cfg = compose(["model=segmentation_unet", "dataset=scenes", f"optimizer={option}",
                   "model.segmenter.base_width=4", "model.segmenter.depth=2"], output_dir=tmp_path)
    if option == "hung":  # its player override names a discriminator: not a player here
        with pytest.raises(ConfigError, match="discriminator"):
            build_model(cfg).plan_optimizers()
        return
    try:
        model = build_model(cfg)
        plan = model.plan_optimizers()
    except ConfigError as err:
        assert "two" in str(err) or "player" in str(err), err
        return
    assert list(plan.optimizers) == ["segmenter"]
    opt = plan.optimizers["segmenter"]
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 11, (2, 16, 16))
    before = [p.detach().clone() for p in model.segmenter.parameters()]
    loss = model.loss_fn(model.segmenter(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.segmenter.parameters()))


def test_joint_game_optimizer_is_refused():
    model = _model({"_target_": "src.optim.extragradient.Extragradient", "lr": 0.1})
    with pytest.raises(ConfigError, match="two players"):
        model.plan_optimizers()


class Pointwise(nn.Module):
    """A 1x1 conv: sliding-window inference must equal whole-image inference exactly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("window,stride", [((8, 8), (5, 5)), ((16, 10), (16, 10)), ((40, 40), (20, 20))])
def test_sliding_window_covers_the_image_and_averages(window, stride):
    net = Pointwise()
    x = torch.randn(2, 3, 21, 17)
    assert torch.allclose(slide_inference(net, x, window, stride), net(x), atol=1e-6)
    for size, w, s in ((21, 8, 5), (17, 10, 10), (5, 8, 4)):
        starts = _starts(size, w, s)
        covered = torch.zeros(size, dtype=torch.bool)
        for s0 in starts:
            covered[s0:s0 + w] = True
        assert covered.all() and starts[-1] + min(w, size) >= size


def test_sliding_window_validation_runs_and_rejects_bad_windows():
    model = _model(inference="slide", window=[16, 16], stride=[8, 8])
    assert model.infer(torch.randn(1, 3, 32, 24)).shape == (1, 4, 32, 24)
    with pytest.raises(ConfigError, match="model.window"):
        _model(inference="slide")
    with pytest.raises(ConfigError, match="model.inference"):
        _model(inference="tiles")


def test_unlabeled_batches_are_ignored_by_the_supervised_model():
    model = _model()
    trainer = _trainer(max_steps=2)
    trainer.fit(model, datamodule=FakeSegData(unlabeled=True, labeled_fraction=0.5))
    assert trainer.global_step == 2


def test_num_classes_mismatch_is_a_config_error():
    with pytest.raises(ConfigError, match="model.num_classes"):
        Segmentation(UNet(3, base_width=4, depth=1), 4, optimizer=OmegaConf.create(ADAM_POLY))
