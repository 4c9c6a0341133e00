"""The GAN's game (src/models/gan.py) and the update rules it gets from src/models/adversarial.py: each
player's loss against values computed here, which noise each update sees, the alternating order and
n_critic, simultaneous updates at one point, joint game optimizers, and the zero-sum check that names
model.loss."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from src.models.gan import GAN
from src.networks.mlp import MLPDiscriminator, MLPGenerator
from src.utils.errors import ConfigError

SGD = {"_target_": "torch.optim.SGD", "lr": 0.05}


def _gan(loss="ns", optimizer=None, **kwargs):
    torch.manual_seed(0)
    return GAN(MLPGenerator(2, [2], hidden=[8]), MLPDiscriminator([2], hidden=[8]), optimizer=optimizer or SGD,
               loss=loss, latent_dim=2, num_eval_samples=8, **kwargs)


@pytest.fixture
def at_iteration(monkeypatch):
    def place(k: int) -> None:
        monkeypatch.setattr(GAN, "iteration", property(lambda self: k))
    return place


def _data(n=32):
    return DataLoader(TensorDataset(torch.randn(n, 2, generator=torch.Generator().manual_seed(1))), batch_size=8)


def _fit(model, steps, **kwargs):
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=0, **kwargs)
    trainer.fit(model, _data())
    return trainer


# ------------------------------------------------------------------------- the game, value by value
def test_losses_match_independent_values_and_each_update_draws_its_own_noise(at_iteration):
    model = _gan("ns")
    real = torch.randn(8, 2)
    at_iteration(3)
    model._phase = 0
    d_only = model.losses((real,), ["discriminator"])
    z0 = model.noise(8)                               # the discriminator's update: phase 0
    model._phase = 1
    g_only = model.losses((real,), ["generator"])
    z1 = model.noise(8)                               # the generator's update: phase 1, fresh noise
    assert not torch.equal(z0, z1)
    D, G = model.discriminator, model.generator
    # D: real -> 1, fake -> 0 (non-saturating / minimax discriminator loss)
    d_expected = F.binary_cross_entropy_with_logits(D(real), torch.ones(8)) + \
        F.binary_cross_entropy_with_logits(D(G(z0)), torch.zeros(8))
    # G: its samples -> 1 (the non-saturating generator loss)
    g_expected = F.binary_cross_entropy_with_logits(D(G(z1)), torch.ones(8))
    assert d_only["discriminator"].item() == pytest.approx(d_expected.item(), rel=1e-6)
    assert g_only["generator"].item() == pytest.approx(g_expected.item(), rel=1e-6)
    model._phase = 0
    both = model.losses((real,), ["generator", "discriminator"])  # one point, one noise draw
    assert both["discriminator"].item() == pytest.approx(d_expected.item(), rel=1e-6)
    assert both["generator"].item() == pytest.approx(
        F.binary_cross_entropy_with_logits(D(G(z0)), torch.ones(8)).item(), rel=1e-6)


def test_wgan_value_is_what_g_minimises_and_d_maximises(at_iteration):
    model = _gan("wgan")
    real = torch.randn(8, 2)
    at_iteration(0)
    f = model.value((real,))
    fake = model.generator(model.noise(8))
    assert f.item() == pytest.approx((model.discriminator(real).mean() - model.discriminator(fake).mean()).item(),
                                     rel=1e-6)


def test_the_discriminators_update_builds_no_graph_through_the_generator(at_iteration):
    model = _gan()
    at_iteration(0)
    loss = model.losses((torch.randn(8, 2),), ["discriminator"])["discriminator"]
    with pytest.raises(RuntimeError):
        torch.autograd.grad(loss, list(model.generator.parameters()))


# --------------------------------------------------------------------------------------- the rules
class Recorder(pl.Callback):
    """Which players' parameters changed in each iteration."""

    def __init__(self):
        self.changed: list[set[str]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.before = {n: [p.detach().clone() for p in m.parameters()] for n, m in module.players.items()}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.changed.append({n for n, m in module.players.items()
                             if any(not torch.equal(a, p) for a, p in zip(self.before[n], m.parameters()))})


def test_n_critic_updates_the_generator_every_kth_iteration():
    rec = Recorder()
    trainer = _fit(_gan(n_critic=3), 6, callbacks=[rec])
    assert trainer.global_step == 6  # iterations, not optimizer steps
    assert rec.changed == [{"discriminator"}, {"discriminator"}, {"discriminator", "generator"}] * 2


def test_alternating_order_decides_which_player_sees_the_others_new_parameters():
    """D first (the default), the generator's loss is evaluated at the updated D; G first, D's is at the
    updated G. The two orders give different parameters after one iteration; simultaneous a third."""
    def params(update=None, order=None):
        model = _gan(optimizer={**SGD, "update": update, "order": order})
        _fit(model, 1)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    d_first, g_first, both = params(), params(order=["generator", "discriminator"]), params("simultaneous")
    assert not torch.equal(d_first, g_first) and not torch.equal(d_first, both) and not torch.equal(g_first, both)
    assert torch.equal(d_first, params(order=["discriminator", "generator"]))


def test_simultaneous_gradients_are_taken_at_one_point():
    """One simultaneous SGD iteration equals both players stepping on gradients at the start parameters."""
    model = _gan(optimizer={**SGD, "update": "simultaneous"})
    ref = _gan()
    real = next(iter(_data()))[0]
    ref._phase = 0
    losses = ref.losses((real,), ["generator", "discriminator"])
    expected = {}
    for name in ("generator", "discriminator"):
        params = list(ref.players[name].parameters())
        grads = torch.autograd.grad(losses[name], params, retain_graph=True)
        expected[name] = [p.detach() - 0.05 * g for p, g in zip(params, grads)]
    _fit(model, 1)
    for name, values in expected.items():
        for want, got in zip(values, model.players[name].parameters()):
            torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-7)


def test_a_joint_game_optimizer_updates_both_players_once_per_iteration():
    rec = Recorder()
    model = _gan("wgan", optimizer={"_target_": "src.optim.cgd.CGD", "lr": 1e-3})
    trainer = _fit(model, 3, callbacks=[rec])
    assert model.rule == "joint" and trainer.global_step == 3
    assert rec.changed == [{"generator", "discriminator"}] * 3


def test_a_zero_sum_optimizer_with_a_non_zero_sum_loss_names_model_loss():
    model = _gan("ns", optimizer={"_target_": "src.optim.cgd.CGD", "lr": 1e-3})
    with pytest.raises(ConfigError, match=r"model\.loss=ns is not zero-sum"):
        model.check_training()


def test_joint_optimizers_refuse_n_critic_and_an_update_rule():
    with pytest.raises(ConfigError, match="model.n_critic"):
        _gan("wgan", optimizer={"_target_": "src.optim.cgd.CGD", "lr": 1e-3}, n_critic=5).check_training()
    with pytest.raises(ConfigError, match="optimizer.update"):
        _gan("wgan", optimizer={"_target_": "src.optim.cgd.CGD", "lr": 1e-3, "update": "alternating"}).check_training()


def test_an_order_that_does_not_name_every_player_is_refused():
    with pytest.raises(ConfigError, match="optimizer.order"):
        _gan(optimizer={**SGD, "order": ["generator"]}).check_training()


# ------------------------------------------------------------------- EMA, DiffAugment, GEAD, classes
def test_ema_follows_the_generator_by_its_decay_and_is_what_samples_come_from(at_iteration):
    model = _gan(ema_decay=0.9, ema_start=2)
    g, ema = model.generator, model.generator_ema
    assert model.sampler is ema and not any(p.requires_grad for p in ema.parameters())
    at_iteration(0)  # before ema_start: a copy
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    model.update_ema()
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), g.parameters()))
    at_iteration(2)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    model.update_ema()
    for b, e, p in zip(before, ema.parameters(), g.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)
    z = torch.randn(4, 2)
    ema.eval()
    torch.testing.assert_close(model(z), ema(z))


def test_diffaugment_changes_what_the_discriminator_sees_in_both_losses(at_iteration):
    at_iteration(1)
    from src.networks.dcgan import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    g, d = DCGANGenerator(8, (1, 28, 28), 8), DCGANDiscriminator((1, 28, 28), 8)
    plain = GAN(g, d, optimizer=SGD, latent_dim=8)
    augmented = GAN(g, d, optimizer=SGD, latent_dim=8, diffaugment="translation,cutout")
    real = torch.rand(4, 1, 28, 28) * 2 - 1
    for players in (["discriminator"], ["generator"]):
        a, b = plain.losses((real,), players), augmented.losses((real,), players)
        assert a[players[0]].item() != b[players[0]].item()
    again = augmented.losses((real,), ["discriminator"])["discriminator"]
    assert again.item() == augmented.losses((real,), ["discriminator"])["discriminator"].item()  # seeded per step
    with pytest.raises(ConfigError, match="model.diffaugment"):
        GAN(g, d, latent_dim=8, diffaugment="rotation")


def test_gead_adds_the_weighted_squared_logit_gap_to_the_discriminators_loss_only(at_iteration):
    at_iteration(0)
    real = torch.randn(8, 2)
    plain, gead = _gan(), _gan(gead_weight=0.5)
    a, b = plain.losses((real,), ["discriminator"]), gead.losses((real,), ["discriminator"])
    z = gead.noise(8)
    gap = (gead.discriminator(gead.generator(z)) - gead.discriminator(real)).pow(2).mean()
    assert b["discriminator"].item() == pytest.approx(a["discriminator"].item() + 0.5 * gap.item(), rel=1e-6)
    gead._phase = plain._phase = 1
    assert gead.losses((real,), ["generator"])["generator"].item() == \
        plain.losses((real,), ["generator"])["generator"].item()
    assert "gead_weight" in _gan("wgan", gead_weight=0.5).zero_sum_error() and _gan("wgan").zero_sum_error() is None


def test_r1_adds_half_gamma_times_the_squared_input_gradient_on_real_data_lazily(at_iteration):
    real = torch.randn(8, 2)
    plain, r1, lazy = _gan(), _gan(r1_weight=2.0), _gan(r1_weight=2.0, r1_every=4)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(r1.discriminator(x).sum(), x)
    penalty = grad.pow(2).sum(1).mean().item()
    assert penalty > 0
    at_iteration(0)
    a = plain.losses((real,), ["discriminator"])["discriminator"].item()
    assert r1.losses((real,), ["discriminator"])["discriminator"].item() == pytest.approx(a + 0.5 * 2.0 * penalty, rel=1e-5)
    # lazy: k times the weight every k-th iteration, nothing in between
    assert lazy.losses((real,), ["discriminator"])["discriminator"].item() == pytest.approx(a + 4 * penalty, rel=1e-5)
    at_iteration(1)
    assert lazy.losses((real,), ["discriminator"])["discriminator"].item() == \
        pytest.approx(plain.losses((real,), ["discriminator"])["discriminator"].item(), rel=1e-6)
    # the penalty reaches D's parameters (a second-order term) and leaves G's loss alone
    at_iteration(0)
    r1.gradients("discriminator", r1.losses((real,), ["discriminator"])["discriminator"])
    plain.gradients("discriminator", plain.losses((real,), ["discriminator"])["discriminator"])
    assert not torch.allclose(r1.discriminator.net[0].weight.grad, plain.discriminator.net[0].weight.grad)
    r1._phase = plain._phase = 1
    assert r1.losses((real,), ["generator"])["generator"].item() == plain.losses((real,), ["generator"])["generator"].item()
    assert "r1_weight" in _gan("wgan", r1_weight=1.0).zero_sum_error()
    for bad in ({"r1_weight": -1.0}, {"r1_every": 0}):
        with pytest.raises(ConfigError, match="model.r1_"):
            _gan(**bad)


def test_a_conditional_gan_trains_on_labels_and_generates_chosen_classes():
    from src.networks.sngan import SNGANDiscriminator, SNGANGenerator

    torch.manual_seed(0)
    model = GAN(SNGANGenerator(16, (1, 28, 28), 16, num_classes=3), SNGANDiscriminator((1, 28, 28), 16, num_classes=3),
                optimizer={"_target_": "torch.optim.Adam", "lr": 2e-4}, loss="hinge", latent_dim=16, num_classes=3,
                num_eval_samples=6, ema_decay=0.99)
    x, y = torch.rand(16, 1, 28, 28) * 2 - 1, torch.arange(16) % 3
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=8))
    assert trainer.global_step == 2
    images = model.generate(torch.tensor([0, 1, 2, 2]), generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and images.abs().max() <= 1
    assert model.fixed_y[:6].tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ConfigError, match="num_classes"):
        GAN(SNGANGenerator(16, (1, 28, 28), 16), SNGANDiscriminator((1, 28, 28), 16, num_classes=3), latent_dim=16,
            num_classes=3)
