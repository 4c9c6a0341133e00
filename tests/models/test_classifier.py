"""Image recognition: networks, the Classifier module, the labeled-subset data, the digits CNN's accuracy."""
from __future__ import annotations

import collections

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from src.data.labeled import LabeledDigitsDataModule, balanced_subset
from src.models.classifier import Classifier, confusion_png, labeled_part
from src.networks.classifier import ConvNet, MLPClassifier, MLPGenerator
from src.utils.errors import ConfigError

ADAM = {"_target_": "torch.optim.Adam", "lr": 3e-3}


@pytest.mark.parametrize("shape,kwargs", [
    ((1, 28, 28), {}),
    ((3, 32, 32), {"widths": [8, 16, 32], "convs_per_block": 2, "residual": True}),
    ((3, 64, 64), {"widths": [8, 16], "global_pool": True, "norm": "layer"}),
    ((1, 8, 8), {"widths": [8, 8, 8]}),  # stops halving at 4x4
])
def test_convnet_shapes(shape, kwargs):
    net = ConvNet(shape, num_classes=7, feature_dim=20, **kwargs)
    x = torch.randn(3, *shape)
    f, logits = net.forward_with_features(x)
    assert f.shape == (3, 20) and logits.shape == (3, 7) and net(x).shape == (3, 7)
    assert net.num_features == 20


def test_mlp_networks_and_noise_only_in_training():
    net = MLPClassifier((1, 28, 28), 10, hidden=[32, 16], input_noise=0.3, hidden_noise=0.5)
    x = torch.randn(4, 1, 28, 28)
    net.eval()
    assert torch.equal(net(x), net(x)) and net.features(x).shape == (4, 16)
    net.train()
    assert not torch.equal(net(x), net(x))
    g = MLPGenerator(10, (1, 28, 28), hidden=[32])
    out = g(torch.randn(5, 10))
    assert out.shape == (5, 1, 28, 28) and out.abs().max() <= 1


def _tiny_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    for k in range(4):  # a bright quadrant per class
        x[y == k, :, (k // 2) * 4:(k // 2) * 4 + 4, (k % 2) * 4:(k % 2) * 4 + 4] += 1.5
    return TensorDataset(x, y)


def test_classifier_learns_logs_accuracy_and_saves_the_confusion_matrix(tmp_path):
    pl.seed_everything(0, verbose=False)
    net = ConvNet((1, 8, 8), num_classes=4, widths=[8], feature_dim=16)
    model = Classifier(net, num_classes=4, optimizer=ADAM, class_names=list("abcd"))
    train = DataLoader(_tiny_data(), batch_size=32, shuffle=True)
    val = DataLoader(_tiny_data(128, seed=1), batch_size=64)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                         log_every_n_steps=1)
    trainer.fit(model, train, val)
    assert float(trainer.callback_metrics["val/acc"]) > 0.9
    assert {"val/acc_balanced", "val/loss", "train/loss", "grad_norm/classifier"} <= set(trainer.callback_metrics)
    pngs = sorted((tmp_path / "confusion").glob("confusion_step*.png"))
    assert len(pngs) == 3 and model.last_confusion.sum() == 128
    preds = trainer.predict(model, DataLoader(_tiny_data(8, seed=2).tensors[0], batch_size=8))
    assert preds[0].shape == (8,)


def test_joint_game_optimizer_is_refused():
    net = ConvNet((1, 8, 8), num_classes=4, widths=[4], feature_dim=8)
    model = Classifier(net, num_classes=4, optimizer={"_target_": "src.optim.extragradient.Extragradient", "lr": 0.01})
    with pytest.raises(ConfigError, match="two"):
        model.plan_optimizers()


def test_num_classes_must_match_the_network():
    with pytest.raises(ConfigError, match="num_classes"):
        Classifier(ConvNet((1, 8, 8), num_classes=3, widths=[4]), num_classes=4, optimizer=ADAM)


def test_labeled_part_of_plain_and_semi_supervised_batches():
    x, y = torch.zeros(2, 1), torch.ones(2)
    assert labeled_part((x, y))[1] is None
    (xl, yl), xu = labeled_part({"labeled": (x, y), "unlabeled": (x + 1, y)})
    assert torch.equal(xl, x) and torch.equal(xu, x + 1)


def test_confusion_png(tmp_path):
    confusion_png(torch.eye(3).numpy() * 5, tmp_path / "c.png", "t")
    assert (tmp_path / "c.png").stat().st_size > 1000


# ----------------------------------------------------------------------------------- labeled subset
def test_balanced_subset_is_balanced_seeded_and_nested_in_nothing_else():
    labels = torch.arange(1000) % 10
    a, b, c = balanced_subset(labels, 100, 0), balanced_subset(labels, 100, 0), balanced_subset(labels, 100, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert collections.Counter(labels[a].tolist()) == {k: 10 for k in range(10)}
    odd = balanced_subset(labels, 25, 0)
    counts = collections.Counter(labels[odd].tolist())
    assert len(odd) == 25 and set(counts.values()) == {2, 3}


def test_labeled_digits_module_saves_ids_and_yields_equal_length_loaders(tmp_path):
    dm = LabeledDigitsDataModule(num_labels=100, save_dir=str(tmp_path), seed=3, batch_size=64)
    dm.setup()
    ids = [int(line) for line in (tmp_path / "labeled_ids.txt").read_text().split()]
    assert ids == dm.labeled_ids and len(ids) == 100
    full_labels = dm.labeled_set.dataset.tensors[1]
    assert collections.Counter(full_labels[ids].tolist()) == {k: 10 for k in range(10)}
    loaders = dm.train_dataloader()
    assert set(loaders) == {"labeled", "unlabeled"} and len(loaders["labeled"]) == len(loaders["unlabeled"]) == 70
    xb, yb = next(iter(loaders["labeled"]))
    assert xb.shape == (64, 1, 28, 28)
    unlabeled_ids = set(dm.unlabeled_set.indices)
    assert not unlabeled_ids & set(ids) and len(unlabeled_ids) == 4400
    plain = LabeledDigitsDataModule(num_labels=100, unlabeled=False, seed=3)
    plain.setup()
    assert plain.labeled_ids == ids and len(plain.train_dataloader()) == 70


def test_the_digits_backbone_is_an_accurate_classifier():
    """The offline FID backbone (trained by the framework on first use, then cached): ~98% on the 500
    held-out digits (experiments/digits_classifier.yaml trains the same network and recipe)."""
    from src.metrics.backbones import load_backbone

    backbone = load_backbone("digits_cnn")
    assert backbone.info["trained"]["val_acc"] > 0.95
