"""The adversarial-segmentation hybrid (Luc et al. 2016; Hung et al. 2018): ignore masking in every term,
each player's loss against values computed independently here (D's targets, S's adversarial target, the
lambda-weighted total, d_on_unlabeled, semi_start and semi_adv_start gating), gradients reaching only the
updated player, the T_semi mask, the diagnostics, per-player optimizer classes, one training run per mode
(and with joint game optimizers), the scenes presets from the CLI."""
from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from src.models.adversarial_segmentation import AdversarialSegmentation, masked_bce
from src.networks.seg_discriminators import HungDiscriminator, LucDiscriminator
from src.networks.unet import UNet
from src.losses.segmentation import one_hot
from src.optim.factory import OptimizerGroup
from src.train import build_model
from src.utils.errors import ConfigError
from tests.helpers import compose
from tests.models.seg_fakes import FakeSegData

K = 4
ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3, "players": {"discriminator": {"lr": 1e-4, "betas": [0.9, 0.99]}}}


def _model(mode="hung", variant="basic", optimizer=None, discriminator=None, **kwargs):
    torch.manual_seed(0)
    seg = UNet(K, base_width=4, depth=2)
    if discriminator is None:
        discriminator = (HungDiscriminator(K, base_width=4) if mode == "hung"
                         else LucDiscriminator(K, variant=variant, base_width=4, num_layers=2))
    return AdversarialSegmentation(seg, discriminator, K, optimizer=OmegaConf.create(optimizer or ADAM), mode=mode,
                                   **kwargs)


@pytest.fixture
def at_iteration(monkeypatch):
    """Place the module at a given 0-based training iteration (what the gating reads)."""
    def place(k: int) -> None:
        monkeypatch.setattr(AdversarialSegmentation, "iteration", property(lambda self: k))
    return place


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
    terms = model.segmenter_terms(x, y, logits)
    model.segmenter_loss(terms).backward()
    ignored = (y == 255).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert logits.grad[~ignored].abs().sum() > 0
    assert terms["adv"] > 0 and terms["ce"] > 0


@pytest.mark.parametrize("mode,variant", [("hung", "basic"), ("luc", "product"), ("luc", "scaling")])
def test_discriminator_loss_ignores_what_lies_under_ignored_pixels(mode, variant):
    model = _model(mode, variant)
    x, y = _batch()
    probs = torch.rand(2, K, 32, 32).softmax(1)
    base = model.discriminator_loss(x, y, probs)
    other = probs.clone()
    other[(y == 255).unsqueeze(1).expand_as(other)] = torch.rand(int((y == 255).sum()) * K)
    assert torch.allclose(model.discriminator_loss(x, y, other), base, atol=1e-6)


def test_masked_bce_is_a_mean_over_selected_pixels():
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 5.0]]]])
    mask = torch.tensor([[[True, False], [True, False]]])
    expected = (torch.nn.functional.softplus(-torch.tensor(0.0)) + torch.nn.functional.softplus(torch.tensor(1.0))) / 2
    assert masked_bce(logits, 1.0, mask).item() == pytest.approx(expected.item())
    assert masked_bce(logits, 1.0, torch.zeros_like(mask)).item() == 0.0


# ------------------------------------------------------------- each loss against independent values
def _bce(logits, target, mask=None):
    """Mean BCE-with-logits to a constant target over the selected pixels, written out here."""
    z = logits.squeeze(1) if mask is not None else logits
    per = -(target * torch.nn.functional.logsigmoid(z) + (1 - target) * torch.nn.functional.logsigmoid(-z))
    if mask is None:
        return per.mean()
    return (per * mask).sum() / mask.sum()


def _ce(logits, y):
    valid = y != 255
    logp = logits.log_softmax(1)
    picked = logp.gather(1, torch.where(valid, y, torch.zeros_like(y))[:, None])[:, 0]
    return -(picked * valid).sum() / valid.sum()


def _unlabeled_batch(seed=1):
    x, y = _batch(seed=seed)
    return {"labeled": _batch(), "unlabeled": (x, y)}


def _expected(model, batch, semi: bool, unlabeled_block: bool, d_on_unlabeled: bool):
    """Both players' losses computed here from the networks' outputs (not from the module's code)."""
    (x, y), (xu, yu) = batch["labeled"], batch["unlabeled"]
    D, S = model.discriminator, model.segmenter
    logits = S(x)
    valid = y != 255
    vm = valid.unsqueeze(1).float()
    probs = logits.softmax(1)
    ce = _ce(logits, y)
    adv = _bce(D(probs * vm), 1.0, valid.float())                      # S wants D to say "real" (1)
    s_loss = ce + model.lambda_adv * adv
    real = _bce(D(one_hot(y, K) * vm), 1.0, valid.float())              # D: ground truth is real (1)
    fake_l = D(probs * vm)
    fake_terms, fake_masks = [fake_l], [valid.float()]
    if unlabeled_block:
        logits_u = S(xu)
        d_u = D(logits_u.softmax(1))
        s_loss = s_loss + model.lambda_adv_unlabeled * _bce(d_u, 1.0, torch.ones_like(d_u[:, 0]))
        if semi:
            conf = torch.sigmoid(d_u)[:, 0] > model.t_semi
            pseudo = logits_u.argmax(1)
            s_loss = s_loss + model.lambda_semi * _ce(logits_u, torch.where(conf, pseudo, torch.full_like(pseudo, 255)))
        if d_on_unlabeled:
            fake_terms.append(D(logits_u.softmax(1)))
            fake_masks.append(torch.ones_like(d_u[:, 0]))
    fake = _bce(torch.cat(fake_terms), 0.0, torch.cat(fake_masks))     # D: predictions are fake (0)
    return s_loss, 0.5 * (real + fake)


@pytest.mark.parametrize("iteration,semi,block", [(0, False, False), (4, False, False), (5, True, True),
                                                   (9, True, True)])
def test_hung_losses_match_independent_values_with_semi_adv_start_gating(iteration, semi, block, at_iteration):
    """semi_start 2 < semi_adv_start 5: the whole unlabeled block (adversarial term, D on unlabeled
    predictions, L_semi) waits for semi_adv_start, as in the authors' code (the old code applied the
    unlabeled adversarial term from semi_start on)."""
    model = _model(lambda_adv=0.3, lambda_adv_unlabeled=0.2, lambda_semi=0.7, t_semi=0.45, semi_start=2,
                   semi_adv_start=5)
    batch = _unlabeled_batch()
    at_iteration(iteration)
    got = model.losses(batch, ["segmenter", "discriminator"])
    s_loss, d_loss = _expected(model, batch, semi, block, d_on_unlabeled=True)
    assert got["segmenter"].item() == pytest.approx(s_loss.item(), rel=1e-5)
    assert got["discriminator"].item() == pytest.approx(d_loss.item(), rel=1e-5)
    assert ("semi" in model._train_logs) == semi and ("adv_unlabeled" in model._train_logs) == block


@pytest.mark.parametrize("iteration,semi", [(5, False), (6, False), (7, True)])
def test_semi_waits_for_semi_start_inside_the_unlabeled_block(iteration, semi, at_iteration):
    model = _model(lambda_adv=0.3, lambda_adv_unlabeled=0.2, lambda_semi=0.7, t_semi=0.45, semi_start=7,
                   semi_adv_start=5)
    batch = _unlabeled_batch()
    at_iteration(iteration)
    got = model.losses(batch, ["segmenter", "discriminator"])
    s_loss, d_loss = _expected(model, batch, semi, True, d_on_unlabeled=True)
    assert got["segmenter"].item() == pytest.approx(s_loss.item(), rel=1e-5)
    assert got["discriminator"].item() == pytest.approx(d_loss.item(), rel=1e-5)


def test_d_on_unlabeled_false_keeps_unlabeled_predictions_out_of_d(at_iteration):
    model = _model(lambda_adv=0.3, lambda_adv_unlabeled=0.2, lambda_semi=0.7, semi_start=0, d_on_unlabeled=False)
    batch = _unlabeled_batch()
    at_iteration(3)
    got = model.losses(batch, ["segmenter", "discriminator"])
    s_loss, d_loss = _expected(model, batch, True, True, d_on_unlabeled=False)
    assert got["segmenter"].item() == pytest.approx(s_loss.item(), rel=1e-5)
    assert got["discriminator"].item() == pytest.approx(d_loss.item(), rel=1e-5)


def test_luc_losses_match_independent_values():
    model = _model("luc", "basic", lambda_adv=0.4)
    x, y = _batch()
    got = model.losses((x, y), ["segmenter", "discriminator"])
    D, logits = model.discriminator, model.segmenter(x)
    vm = (y != 255).unsqueeze(1).float()
    probs = logits.softmax(1)
    s_loss = _ce(logits, y) + 0.4 * _bce(D(x, probs * vm), 1.0)
    d_loss = _bce(D(x, one_hot(y, K) * vm), 1.0) + _bce(D(x, probs * vm), 0.0)
    assert got["segmenter"].item() == pytest.approx(s_loss.item(), rel=1e-5)
    assert got["discriminator"].item() == pytest.approx(d_loss.item(), rel=1e-5)


def test_zero_sum_value_is_ce_plus_semi_minus_weighted_d_loss(at_iteration):
    model = _model(lambda_adv=0.3, lambda_adv_unlabeled=0.0, lambda_semi=0.7, t_semi=0.45, semi_start=0)
    batch = _unlabeled_batch()
    at_iteration(1)
    f = model.value(batch)
    (x, y), (xu, _) = batch["labeled"], batch["unlabeled"]
    logits_u = model.segmenter(xu)
    conf = torch.sigmoid(model.discriminator(logits_u.softmax(1)))[:, 0] > 0.45
    pseudo = logits_u.argmax(1)
    semi = _ce(logits_u, torch.where(conf, pseudo, torch.full_like(pseudo, 255)))
    _, d_loss = _expected(model, batch, True, True, d_on_unlabeled=True)
    expected = _ce(model.segmenter(x), y) + 0.7 * semi - 0.3 * d_loss
    assert f.item() == pytest.approx(expected.item(), rel=1e-5)


# ------------------------------------------------------------------------- gradients per player
@pytest.mark.parametrize("mode,unlabeled", [("hung", False), ("hung", True), ("luc", False)])
def test_each_player_gradient_reaches_only_its_own_parameters(mode, unlabeled, at_iteration):
    model = _model(mode, "product", semi_start=0)
    at_iteration(0)
    x, y = _batch()
    batch = {"labeled": (x, y), "unlabeled": _batch(seed=1)} if unlabeled else (x, y)
    losses = model.losses(batch, ["segmenter", "discriminator"])

    def got(m):
        return any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())

    model.gradients("segmenter", losses["segmenter"], retain_graph=True)
    assert got(model.segmenter) and not got(model.discriminator)
    s_grads = [p.grad.clone() for p in model.segmenter.parameters()]
    model.gradients("discriminator", losses["discriminator"])
    assert got(model.discriminator)
    assert all(torch.equal(a, p.grad) for a, p in zip(s_grads, model.segmenter.parameters()))
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen by hand


def test_an_alternating_d_phase_builds_no_graph_through_the_segmenter():
    model = _model()
    d_only = model.losses(_batch(), ["discriminator"])
    assert set(d_only) == {"discriminator"}
    grads = torch.autograd.grad(d_only["discriminator"], list(model.discriminator.parameters()), allow_unused=True)
    assert any(g is not None for g in grads)
    with pytest.raises(RuntimeError):  # S's prediction was made without a graph
        torch.autograd.grad(d_only["discriminator"], list(model.segmenter.parameters()))


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


def test_semi_loss_only_where_confidence_exceeds_t_semi_and_only_from_semi_start(at_iteration):
    model = _model(discriminator=FixedConfidence(), lambda_adv=0.0, lambda_adv_unlabeled=0.0, lambda_semi=1.0,
                   t_semi=0.2, semi_start=3)
    x, y = _batch()
    xu, yu = _batch(seed=1)
    logits_u = torch.randn(2, K, 32, 32, requires_grad=True)
    logits = torch.randn(2, K, 32, 32)
    at_iteration(2)  # before semi_start: no semi term
    assert "semi" not in model.segmenter_terms(x, y, logits, (xu, yu), logits_u)
    at_iteration(3)
    model._train_logs = {}
    terms = model.segmenter_terms(x, y, logits, (xu, yu), logits_u)
    model.segmenter_loss(terms).backward()
    g = logits_u.grad.abs().sum(1)
    assert torch.all(g[..., 16:] == 0) and torch.all(g[..., :16] > 0)
    assert model._train_logs["semi_fraction"].item() == pytest.approx(0.5)
    # the semi loss is the cross-entropy to the argmax pseudo-labels on the confident half
    pseudo = logits_u.detach().argmax(1)
    expected = torch.nn.functional.cross_entropy(logits_u.detach()[..., :16], pseudo[..., :16])
    assert terms["semi"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_pseudo_label_accuracy_above_and_below_t_semi():
    model = _model(discriminator=FixedConfidence())
    pseudo = torch.zeros(1, 4, 4, dtype=torch.long)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[..., 2:] = 1          # the right (unconfident) half is wrong
    target[0, 0, 0] = 255        # ignored: not counted
    above = torch.zeros(1, 4, 4, dtype=torch.bool)
    above[..., :2] = True
    model._record_pseudo(pseudo, target, above)
    logs = model._train_logs
    assert logs["pseudo_acc_above"].item() == 1.0 and logs["pseudo_acc_below"].item() == 0.0
    assert logs["pseudo_acc"].item() == pytest.approx(7 / 15) and logs["semi_fraction"].item() == 0.5


def test_gradient_ratios_and_d_accuracy_on_real_and_predicted_maps(at_iteration):
    at_iteration(0)
    model = _model(lambda_adv=0.05)
    x, y = _batch()
    out = model.losses((x, y), ["segmenter", "discriminator"])
    logs = model._train_logs
    # independently: the weighted adversarial gradient's norm over the cross-entropy's, on S's parameters
    params = list(model.segmenter.parameters())
    logits = model.segmenter(x)
    valid = y != 255
    ce = torch.nn.functional.cross_entropy(logits, y, ignore_index=255)
    d_in = logits.softmax(1) * valid.unsqueeze(1)
    adv = masked_bce(model.discriminator(d_in), 1.0, valid)
    g_ce = torch.autograd.grad(ce, params, retain_graph=True)
    g_adv = torch.autograd.grad(0.05 * adv, params)
    norm = lambda gs: torch.sqrt(sum((g ** 2).sum() for g in gs))  # noqa: E731
    assert logs["grad_ratio_adv"].item() == pytest.approx((norm(g_adv) / norm(g_ce)).item(), rel=1e-4)
    # D's accuracy on the ground-truth maps and on the predictions, over the pixels that are not ignored
    real = model.discriminator(one_hot(y, K, 255, torch.float32) * valid.unsqueeze(1)).squeeze(1)
    fake = model.discriminator(d_in.detach()).squeeze(1)
    assert logs["d_acc_real"].item() == pytest.approx(((real > 0) & valid).sum().item() / valid.sum().item())
    assert logs["d_acc_fake"].item() == pytest.approx(((fake < 0) & valid).sum().item() / valid.sum().item())
    out["segmenter"].backward()  # the diagnostics left the graph usable for the update


# ------------------------------------------------------------------------------------ training steps
@pytest.mark.parametrize("mode,variant,unlabeled,update", [("hung", "basic", False, None), ("hung", "basic", True, None),
                                                           ("hung", "basic", True, "alternating"),
                                                           ("luc", "basic", False, None), ("luc", "product", False, None),
                                                           ("luc", "scaling", False, None)])
def test_one_training_run_per_mode(mode, variant, unlabeled, update):
    model = _model(mode, variant, semi_start=1, optimizer={**ADAM, "update": update})
    trainer = _trainer(max_steps=2)  # 2 iterations
    trainer.log_every_n_steps = 1
    data = FakeSegData(num_train=8, unlabeled=unlabeled, labeled_fraction=0.5 if unlabeled else 1.0)
    trainer.fit(model, datamodule=data)
    m = trainer.callback_metrics
    assert trainer.global_step == 2
    for key in ("train/loss", "train/ce", "train/adv", "train/d_loss", "train/d_acc", "val/mIoU", "val/mAcc",
                "val/aAcc", "grad_norm/segmenter", "grad_norm/discriminator"):
        assert key in m, key
    if mode == "hung":
        assert "val/semi_fraction" in m
    if unlabeled:
        for key in ("train/semi", "train/adv_unlabeled", "train/semi_fraction", "train/pseudo_acc"):
            assert key in m, key


@pytest.mark.parametrize("optimizer", [{"_target_": "src.optim.extragradient.Extragradient", "lr": 1e-2},
                                       {"_target_": "src.optim.cgd.CGD", "lr": 1e-2}])
def test_joint_game_optimizers_train_both_players(optimizer):
    model = _model(semi_start=0, optimizer=optimizer)
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in model.players.items()}
    trainer = _trainer(max_steps=2)
    trainer.log_every_n_steps = 1
    trainer.fit(model, datamodule=FakeSegData(unlabeled=True, labeled_fraction=0.5))
    assert model.rule == "joint"
    for name, module in model.players.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters())), name
    assert "train/d_loss" in trainer.callback_metrics


def test_joint_optimizer_refuses_a_head_multiplier():
    model = _model(head_lr_mult=10.0, optimizer={"_target_": "src.optim.extragradient.Extragradient", "lr": 1e-2})
    with pytest.raises(ConfigError, match="head_lr_mult"):
        model.plan_optimizers()


# ---------------------------------------------------------------------------------- optimizer presets
def test_hung_preset_gives_each_player_its_own_optimizer_class_and_poly(tmp_path):
    cfg = compose(["model=adv_seg_hung", "dataset=scenes", "optimizer=hung", "model.head_lr_mult=10",
                   "model.segmenter.base_width=4", "model.discriminator.base_width=4", "trainer.max_steps=100"],
                  output_dir=tmp_path)
    model = build_model(cfg)
    plan = model.optimizer_group.build(model.players, model.player_param_groups(), iterations=100)
    s, d = plan.optimizers["segmenter"], plan.optimizers["discriminator"]
    assert type(s).__name__ == "SGD" and type(d).__name__ == "Adam"
    assert sorted(g["lr"] for g in s.param_groups) == pytest.approx([2.5e-4, 2.5e-3])
    assert all(g["momentum"] == 0.9 and g["weight_decay"] == pytest.approx(5e-4) for g in s.param_groups)
    assert d.param_groups[0]["lr"] == pytest.approx(1e-4) and tuple(d.param_groups[0]["betas"]) == (0.9, 0.99)
    assert {type(x).__name__ for x in plan.schedulers.values()} == {"PolynomialLR"}
    assert all(x.power == 0.9 and x.total_iters == 100 for x in plan.schedulers.values())


def test_mode_and_discriminator_must_match():
    with pytest.raises(ConfigError, match="image-level"):
        _model("luc", discriminator=HungDiscriminator(K, base_width=4))
    with pytest.raises(ConfigError, match="model.t_semi"):
        _model(t_semi=1.5)


# -------------------------------------------------------------------------------------------- the CLI
TINY = ["logger=csv", "dataset.num_train=64", "dataset.num_val=16", "dataset.val_batch_size=16",
        "model.segmenter.base_width=4", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]


@pytest.mark.parametrize("experiment,steps", [("scenes_supervised", 3), ("scenes_adv", 3), ("scenes_semi", 3)])
def test_scenes_presets_run_from_the_cli(experiment, steps, cli):
    extra = ["model.semi_start=1", "model.discriminator.base_width=4"] if experiment != "scenes_supervised" else []
    result = cli(f"experiment={experiment}", f"trainer.max_steps={steps}", *TINY, *extra, "test_after_fit=true",
                 "dataset.num_test=16")
    assert result.returncode == 0, result.output[-3000:]
    s = result.summary
    assert s["status"] == "finished" and s["global_step"] == steps
    for key in ("val/mIoU", "val/mAcc", "val/aAcc", "train/loss", "test/mIoU", "test/aAcc"):
        assert key in s["metrics"], key
    assert s["metrics"]["test/mIoU"]["final_step"] == steps  # the final weights, once
    assert "test/mIoU" in result.output  # in the end-of-run table
    if experiment != "scenes_supervised":
        for key in ("train/grad_ratio_adv", "train/d_acc_real", "train/d_acc_fake"):
            assert key in s["metrics"], key
    assert list((result.run_dir / "overlays").glob("overlays_step*.png")), "overlay pictures at validation"
    assert (result.run_dir / "labeled_ids.txt").is_file()
    if experiment == "scenes_semi":
        for key in ("train/semi", "train/pseudo_acc_above", "val/semi_fraction"):
            assert key in s["metrics"], key
    json.dumps(s)


def test_factory_player_classes_from_plain_config_and_refusals():
    players = {"segmenter": nn.Conv2d(3, 4, 1), "discriminator": nn.Conv2d(4, 1, 1)}
    group = OptimizerGroup({"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9,
                            "players": {"discriminator": {"_target_": "torch.optim.Adam", "lr": 1e-4}}})
    plan = group.build(players)
    assert type(plan.optimizers["segmenter"]).__name__ == "SGD"
    assert type(plan.optimizers["discriminator"]).__name__ == "Adam"
    assert "momentum" not in plan.optimizers["discriminator"].param_groups[0]  # nothing inherited
    bad = OptimizerGroup({"_target_": "torch.optim.SGD", "lr": 0.1,
                          "players": {"discriminator": {"_target_": "torch.optim.Adam", "nope": 1}}})
    with pytest.raises(ConfigError, match="optimizer.players.discriminator|nope"):
        bad.build(players)
    joint = OptimizerGroup({"_target_": "src.optim.extragradient.Extragradient", "lr": 0.1,
                            "players": {"discriminator": {"_target_": "torch.optim.Adam"}}})
    with pytest.raises(ConfigError, match="joint game optimizer"):
        joint.build(players)
    with pytest.raises(ConfigError, match="unknown player"):
        OptimizerGroup({"_target_": "torch.optim.SGD", "lr": 0.1, "players": {"generator": {"lr": 1}}}).build(players)
