"""The adversarial-segmentation hybrid (Luc et al. 2016; Hung et al. 2018): ignore masking in every term,
detaching between players, the T_semi mask and semi_start, the diagnostics, per-player optimizer
classes, one training step per mode (and with a joint game optimizer), the scenes presets from the CLI."""
from __future__ import annotations

import functools
import json

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from src.models.adversarial_segmentation import AdversarialSegmentation, masked_bce
from src.networks.seg_discriminators import HungDiscriminator, LucDiscriminator
from src.networks.unet import UNet
from src.optim.base import GameOptimizer
from src.train import build_model
from src.utils.errors import ConfigError
from tests.helpers import compose
from tests.models.seg_fakes import FakeSegData

K = 4
ADAM = {"optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3},
        "players": {"discriminator": {"lr": 1e-4, "betas": [0.9, 0.99]}}, "scheduler": None}


def _model(mode="hung", variant="basic", optimizer=None, discriminator=None, **kwargs):
    torch.manual_seed(0)
    seg = UNet(K, base_width=4, depth=2)
    if discriminator is None:
        discriminator = (HungDiscriminator(K, base_width=4) if mode == "hung"
                         else LucDiscriminator(K, variant=variant, base_width=4, num_layers=2))
    return AdversarialSegmentation(seg, discriminator, K, optimizer=OmegaConf.create(optimizer or ADAM), mode=mode,
                                   **kwargs)


def _batch(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, K, (n, size, size), generator=g)
    y[:, :5, :] = 255           # a band of ignored pixels
    y[0, 20:24, 10:14] = 255    # and a hole
    return x, y


def _trainer(max_steps=4):
    return pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0)


# --------------------------------------------------------------------------------------- ignore masking
@pytest.mark.parametrize("mode,variant", [("hung", "basic"), ("luc", "basic"), ("luc", "product"), ("luc", "scaling")])
def test_segmenter_loss_gives_no_gradient_to_ignored_pixels(mode, variant):
    model = _model(mode, variant, lambda_adv=1.0)  # a large adversarial weight: its gradient must be masked too
    x, y = _batch()
    logits = torch.randn(2, K, 32, 32, requires_grad=True)
    logs = {}
    loss = model.segmenter_loss(x, y, logits, None, logs)
    loss.backward()
    ignored = (y == 255).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert logits.grad[~ignored].abs().sum() > 0
    assert logs["adv"] > 0 and logs["ce"] > 0


@pytest.mark.parametrize("mode,variant", [("hung", "basic"), ("luc", "product"), ("luc", "scaling")])
def test_discriminator_loss_ignores_what_lies_under_ignored_pixels(mode, variant):
    model = _model(mode, variant)
    x, y = _batch()
    probs = torch.rand(2, K, 32, 32).softmax(1)
    base = model.discriminator_loss(x, y, probs, None, {})
    other = probs.clone()
    other[(y == 255).unsqueeze(1).expand_as(other)] = torch.rand(int((y == 255).sum()) * K)
    assert torch.allclose(model.discriminator_loss(x, y, other, None, {}), base, atol=1e-6)


def test_masked_bce_is_a_mean_over_selected_pixels():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 5.0]]]])
    mask = torch.tensor([[[True, False], [True, False]]])
    expected = (torch.nn.functional.softplus(-torch.tensor(0.0)) + torch.nn.functional.softplus(torch.tensor(1.0))) / 2
    assert masked_bce(logits, 1.0, mask).item() == pytest.approx(expected.item())
    assert masked_bce(logits, 1.0, torch.zeros_like(mask)).item() == 0.0


# ------------------------------------------------------------------------------------------ detaching
def _record_player_steps(model):
    """Replace player_step by: backward, note which players got a gradient, no update."""
    seen = {}

    def fake_step(name, loss):
        for p in model.parameters():
            p.grad = None
        loss.backward()
        got = lambda m: any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())  # noqa: E731
        seen[name] = {"segmenter": got(model.segmenter), "discriminator": got(model.discriminator)}

    model.player_step = fake_step
    return seen


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("mode,unlabeled", [("hung", False), ("hung", True), ("luc", False)])
def test_each_player_update_reaches_only_its_own_parameters(mode, unlabeled):
    model = _model(mode, "product", semi_start=0)
    seen = _record_player_steps(model)
    x, y = _batch()
    batch = {"labeled": (x, y), "unlabeled": _batch(seed=1)} if unlabeled else (x, y)
    model.training_step(batch, 0)
    assert seen["segmenter"] == {"segmenter": True, "discriminator": False}
    assert seen["discriminator"] == {"segmenter": False, "discriminator": True}
    assert all(p.requires_grad for p in model.discriminator.parameters())  # unfrozen again


# -------------------------------------------------------------------------------------------- T_semi
class FixedConfidence(nn.Module):
    """A stand-in discriminator: logit +4 (confident) on the left half, -4 on the right half."""

    def __init__(self, num_classes=K):
        super().__init__()
        self.num_classes = num_classes
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, probs):
        b, _, h, w = probs.shape
        logits = torch.full((b, 1, h, w), -4.0)
        logits[..., : w // 2] = 4.0
        return logits + 0 * self.bias + 0 * probs.sum(1, keepdim=True)


def test_semi_loss_only_where_confidence_exceeds_t_semi_and_only_from_semi_start():
    model = _model(discriminator=FixedConfidence(), lambda_adv=0.0, lambda_adv_unlabeled=0.0, lambda_semi=1.0,
                   t_semi=0.2, semi_start=3)
    x, y = _batch()
    xu, yu = _batch(seed=1)
    logits_u = torch.randn(2, K, 32, 32, requires_grad=True)
    logits = torch.randn(2, K, 32, 32)
    # before semi_start: no semi term
    model.batches_seen.fill_(3)
    logs = {}
    model.segmenter_loss(x, y, logits, (xu, yu), logs, logits_u)
    assert "semi" not in logs
    model.batches_seen.fill_(4)  # during the 4th batch (iteration 3): batches are counted at their start
    logs = {}
    loss = model.segmenter_loss(x, y, logits, (xu, yu), logs, logits_u)
    assert "semi" in logs
    loss.backward()
    g = logits_u.grad.abs().sum(1)
    assert torch.all(g[..., 16:] == 0) and torch.all(g[..., :16] > 0)
    assert logs["semi_fraction"].item() == pytest.approx(0.5)
    # the semi loss is the cross-entropy to the argmax pseudo-labels on the confident half
    pseudo = logits_u.detach().argmax(1)
    expected = torch.nn.functional.cross_entropy(logits_u.detach()[..., :16], pseudo[..., :16])
    assert logs["semi"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_pseudo_label_accuracy_above_and_below_t_semi():
    model = _model(discriminator=FixedConfidence())
    pseudo = torch.zeros(1, 4, 4, dtype=torch.long)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[..., 2:] = 1          # the right (unconfident) half is wrong
    target[0, 0, 0] = 255        # ignored: not counted
    above = torch.zeros(1, 4, 4, dtype=torch.bool)
    above[..., :2] = True
    logs = {}
    model._log_pseudo(logs, pseudo, target, above)
    assert logs["pseudo_acc_above"].item() == 1.0 and logs["pseudo_acc_below"].item() == 0.0
    assert logs["pseudo_acc"].item() == pytest.approx(7 / 15) and logs["semi_fraction"].item() == 0.5


# ------------------------------------------------------------------------------------ training steps
@pytest.mark.parametrize("mode,variant,unlabeled", [("hung", "basic", False), ("hung", "basic", True),
                                                    ("luc", "basic", False), ("luc", "product", False),
                                                    ("luc", "scaling", False)])
def test_one_training_run_per_mode(mode, variant, unlabeled):
    model = _model(mode, variant, semi_start=1)
    trainer = _trainer(max_steps=4)  # 2 iterations: S and D step once each per iteration
    data = FakeSegData(num_train=8, unlabeled=unlabeled, labeled_fraction=0.5 if unlabeled else 1.0)
    trainer.fit(model, datamodule=data)
    m = trainer.callback_metrics
    assert int(model.batches_seen) == 2 and trainer.global_step == 4
    for key in ("train/loss", "train/ce", "train/adv", "train/d_loss", "train/d_acc", "val/mIoU", "val/mAcc",
                "val/aAcc", "grad_norm/segmenter", "grad_norm/discriminator"):
        assert key in m, key
    if mode == "hung":
        assert "val/semi_fraction" in m
    if unlabeled:
        for key in ("train/semi", "train/adv_unlabeled", "train/semi_fraction", "train/pseudo_acc"):
            assert key in m, key


class Simultaneous(GameOptimizer):
    """Simultaneous gradient descent on each player's own loss: the smallest game optimizer."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, {"lr": lr})

    def step(self, closure):
        losses = closure()
        for group, loss in zip(self.param_groups, losses):
            grads = torch.autograd.grad(loss, group["params"], retain_graph=True, allow_unused=True)
            for p, g in zip(group["params"], grads):
                p.grad = g
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"])
        return losses


class ZeroSumSimultaneous(Simultaneous):
    requires_zero_sum = True


@pytest.mark.parametrize("cls", [Simultaneous, ZeroSumSimultaneous])
def test_joint_game_optimizer_trains_both_players(cls):
    model = _model(semi_start=0)
    model.optimizer_cfg = {"optimizer": functools.partial(cls, lr=1e-2)}
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in model.players.items()}
    trainer = _trainer(max_steps=2)
    trainer.fit(model, datamodule=FakeSegData(unlabeled=True, labeled_fraction=0.5))
    assert model.joint
    for name, module in model.players.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), name
    assert "train/d_loss" in trainer.callback_metrics


def test_joint_optimizer_refuses_a_head_multiplier():
    model = _model(head_lr_mult=10.0)
    model.optimizer_cfg = {"optimizer": functools.partial(Simultaneous, lr=1e-2)}
    with pytest.raises(ConfigError, match="head_lr_mult"):
        model.plan_optimizers()


# ---------------------------------------------------------------------------------- optimizer presets
def test_hung_preset_gives_each_player_its_own_optimizer_class_and_poly(tmp_path):
    cfg = compose(["model=adv_seg_hung", "dataset=scenes", "optimizer=hung", "model.head_lr_mult=10",
                   "model.segmenter.base_width=4", "model.discriminator.base_width=4"], output_dir=tmp_path)
    plan = build_model(cfg).plan_optimizers()
    s, d = plan.optimizers["segmenter"], plan.optimizers["discriminator"]
    assert type(s).__name__ == "SGD" and type(d).__name__ == "Adam"
    assert sorted(g["lr"] for g in s.param_groups) == pytest.approx([2.5e-4, 2.5e-3])
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == pytest.approx(5e-4) for g in s.param_groups)
    assert d.param_groups[0]["lr"] == pytest.approx(1e-4) and tuple(d.param_groups[0]["betas"]) == (0.9, 0.99)
    assert {type(x).__name__ for x in plan.schedulers.values()} == {"PolynomialLR"}
    assert all(x.power == 0.9 for x in plan.schedulers.values())


def test_mode_and_discriminator_must_match():
    with pytest.raises(ConfigError, match="image-level"):
        _model("luc", discriminator=HungDiscriminator(K, base_width=4))
    with pytest.raises(ConfigError, match="model.t_semi"):
        _model(t_semi=1.5)


# -------------------------------------------------------------------------------------------- the CLI
TINY = ["logger=csv", "dataset.num_train=64", "dataset.num_val=16", "dataset.val_batch_size=16",
        "model.segmenter.base_width=4", "trainer.val_check_interval=2"]


@pytest.mark.parametrize("experiment,steps", [("scenes_supervised", 3), ("scenes_adv", 6), ("scenes_semi", 6)])
def test_scenes_presets_run_from_the_cli(experiment, steps, cli):
    extra = ["model.semi_start=1", "model.discriminator.base_width=4"] if experiment != "scenes_supervised" else []
    result = cli(f"+experiment={experiment}", f"trainer.max_steps={steps}", *TINY, *extra)
    assert result.returncode == 0, result.output[-3000:]
    s = result.summary
    assert s["status"] == "finished"
    for key in ("val/mIoU", "val/mAcc", "val/aAcc", "train/loss"):
        assert key in s["metrics"], key
    assert list((result.run_dir / "overlays").glob("overlays_step*.png")), "overlay pictures at validation"
    assert (result.run_dir / "labeled_ids.txt").is_file()
    if experiment == "scenes_semi":
        for key in ("train/semi", "train/pseudo_acc_above", "val/semi_fraction"):
            assert key in s["metrics"], key
    json.dumps(s)


def test_factory_player_classes_from_plain_config_and_refusals():
    from src.optim.factory import build_optimizers

    players = {"segmenter": nn.Conv2d(3, 4, 1), "discriminator": nn.Conv2d(4, 1, 1)}
    cfg = OmegaConf.create({"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1, "momentum": 0.9},
                            "players": {"discriminator": {"_target_": "torch.optim.Adam", "lr": 1e-4}}})
    plan = build_optimizers(cfg, players)  # a raw config node: the factory instantiates the player's class
    assert type(plan.optimizers["segmenter"]).__name__ == "SGD"
    assert type(plan.optimizers["discriminator"]).__name__ == "Adam"
    assert "momentum" not in plan.optimizers["discriminator"].param_groups[0]  # nothing inherited
    bad = OmegaConf.create({"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
                            "players": {"discriminator": {"_target_": "torch.optim.Adam", "nope": 1}}})
    with pytest.raises(ConfigError, match="optimizer.players.discriminator|nope"):
        build_optimizers(bad, players)
    joint = {"optimizer": functools.partial(Simultaneous, lr=0.1),
             "players": {"discriminator": {"_target_": "torch.optim.Adam", "_partial_": True}}}
    with pytest.raises(ConfigError, match="joint game optimizer"):
        build_optimizers(joint, players)
