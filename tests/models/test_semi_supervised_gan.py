"""The semi-supervised GAN (Salimans et al. 2016): its losses, one player step each, validation."""
from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from src.models.semi_supervised_gan import SemiSupervisedGAN
from src.networks.classifier import ConvNet, MLPGenerator
from src.utils.errors import ConfigError

ADAM = {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.5, 0.999]}


def make(generator_loss="feature_matching", optimizer=ADAM):
    torch.manual_seed(0)
    g = MLPGenerator(8, (1, 8, 8), hidden=[16])
    d = ConvNet((1, 8, 8), num_classes=3, widths=[4], feature_dim=8, norm="none", input_noise=0.1)
    return SemiSupervisedGAN(g, d, num_classes=3, optimizer=optimizer, latent_dim=8, num_fixed_samples=9,
                             generator_loss=generator_loss)


def test_unsupervised_terms_are_minus_log_d_with_d_z_over_z_plus_one():
    real, fake = torch.randn(5, 3), torch.randn(6, 3)
    got_real, got_fake = SemiSupervisedGAN.unsupervised_terms(real, fake)
    z_real, z_fake = real.exp().sum(1), fake.exp().sum(1)
    d_real, d_fake = z_real / (z_real + 1), z_fake / (z_fake + 1)
    assert math.isclose(float(got_real), float(-d_real.log().mean()), rel_tol=1e-5)
    assert math.isclose(float(got_fake), float(-(1 - d_fake).log().mean()), rel_tol=1e-5)
    # stable for large logits
    big_real, big_fake = SemiSupervisedGAN.unsupervised_terms(torch.full((2, 3), 80.0), torch.full((2, 3), 80.0))
    assert math.isfinite(float(big_real)) and math.isfinite(float(big_fake)) and float(big_fake) > 70


def test_feature_matching_loss_is_zero_for_identical_batches():
    model = make()
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    assert float(model.generator_objective(x, x)) == pytest.approx(0.0, abs=1e-12)
    assert float(make("ns").generator_objective(x, x)) > 0


def test_training_steps_update_both_players_and_validation_reports_accuracy(tmp_path):
    pl.seed_everything(0, verbose=False)
    model = make()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(96, 1, 8, 8, generator=g) * 2 - 1, torch.arange(96) % 3
    labeled = DataLoader(TensorDataset(x[:48], y[:48]), batch_size=16)
    unlabeled = DataLoader(TensorDataset(x[48:], y[48:]), batch_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                         log_every_n_steps=1)
    trainer.fit(model, {"labeled": labeled, "unlabeled": unlabeled}, DataLoader(TensorDataset(x, y), batch_size=48))
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before
               if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert {"generator", "discriminator"} <= changed
    metrics = trainer.callback_metrics
    assert {"val/acc", "train/d_sup", "train/d_unsup", "train/g_loss"} <= set(metrics)
    assert trainer.global_step == 3  # iterations: one D and one G update each
    assert model.sample_fixed().shape == (9, 1, 8, 8) and model.sample_fixed(20).shape == (20, 1, 8, 8)
    assert list((tmp_path / "confusion").glob("*.png"))


def test_plain_batches_use_every_image_as_labeled_and_unlabeled(tmp_path):
    model = make("ns")
    x, y = torch.rand(32, 1, 8, 8) * 2 - 1, torch.arange(32) % 3
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=16))
    assert trainer.global_step == 2


def test_bad_arguments_name_their_key():
    with pytest.raises(ConfigError, match="model.generator_loss"):
        make("nope")
    with pytest.raises(ConfigError, match="model.num_classes"):
        SemiSupervisedGAN(MLPGenerator(8, (1, 8, 8), [4]), ConvNet((1, 8, 8), 5, widths=[4]), num_classes=3,
                          optimizer=ADAM, latent_dim=8)
