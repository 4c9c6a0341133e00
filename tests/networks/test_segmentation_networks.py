"""Segmenters and segmentation discriminators: shapes at any input size, parameter splits, weights from
local files only, the Luc input variants and the Hung discriminator's architecture."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from src.networks.seg_discriminators import HungDiscriminator, LucDiscriminator, luc_scaling
from src.networks.segmentation import FCN, DeepLabV3, TorchvisionSegmenter
from src.networks.unet import UNet
from src.utils.errors import ConfigError


def _split_is_a_partition(net):
    head = {id(p) for p in net.head_parameters()}
    backbone = {id(p) for p in net.backbone_parameters()}
    every = {id(p) for p in net.parameters()}
    assert head and backbone and not head & backbone and head | backbone == every


@pytest.mark.parametrize("size", [(32, 32), (37, 53), (15, 9)])
@pytest.mark.parametrize("kwargs", [{}, {"upsample": "transpose", "norm": "group"}, {"downsample": 2}])
def test_unet_logits_at_input_resolution_for_any_size(size, kwargs):
    net = UNet(5, base_width=4, depth=3, **kwargs).eval()
    out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)


def test_unet_parameter_split():
    _split_is_a_partition(UNet(3, base_width=4, depth=2))


@pytest.mark.parametrize("builder,backbone", [(FCN, "resnet50"), (DeepLabV3, "mobilenet_v3_large")])
def test_torchvision_segmenters_build_offline_and_keep_the_input_size(builder, backbone):
    net = builder(4, backbone=backbone).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 35, 47))
    assert out.shape == (1, 4, 35, 47)
    _split_is_a_partition(net)


def test_unknown_backbone_and_missing_weights_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="backbone.*resnet101"):
        TorchvisionSegmenter(3, arch="fcn", backbone="mobilenet_v3_large")
    with pytest.raises(ConfigError, match="no weights file"):
        DeepLabV3(3, backbone="mobilenet_v3_large", weights_path=str(tmp_path / "missing.pth"))


def test_local_weights_load_and_skip_a_different_classifier(tmp_path):
    torch.manual_seed(0)
    src = DeepLabV3(7, backbone="mobilenet_v3_large")
    path = tmp_path / "deeplab.pth"
    torch.save({"state_dict": src.net.state_dict()}, path)
    torch.manual_seed(1)
    dst = DeepLabV3(3, backbone="mobilenet_v3_large", weights_path=str(path))
    a, b = src.net.state_dict(), dst.net.state_dict()
    same = [k for k in a if a[k].shape == b[k].shape]
    assert all(torch.equal(a[k], b[k]) for k in same)
    assert any(a[k].shape != b[k].shape for k in a)  # the 7-class layer was skipped, not forced
    # a backbone-only ImageNet-style file (keys "features.*" as in torchvision's classifier)
    bb = {f"features.{k}": v for k, v in src.net.backbone.state_dict().items()}
    bb["classifier.3.weight"] = torch.zeros(1000, 1280)
    torch.save(bb, tmp_path / "bb.pth")
    dst2 = DeepLabV3(3, backbone="mobilenet_v3_large", backbone_weights_path=str(tmp_path / "bb.pth"))
    assert all(torch.equal(v, dst2.net.backbone.state_dict()[k]) for k, v in src.net.backbone.state_dict().items())


def test_freeze_bn_keeps_batchnorm_in_eval_mode_and_allows_batch_size_one():
    net = DeepLabV3(3, backbone="mobilenet_v3_large", freeze_bn=True).train()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert all(not p.requires_grad for m in bns for p in m.parameters())
    out = net(torch.randn(1, 3, 33, 33))  # batch 1 in training mode: fine with frozen BN
    assert out.shape == (1, 3, 33, 33)


# ------------------------------------------------------------------------------------- discriminators
def test_hung_discriminator_architecture_and_output_size():
    d = HungDiscriminator(6)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (6, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2)), (128, 256, (4, 4), (2, 2)),
        (256, 512, (4, 4), (2, 2)), (512, 1, (4, 4), (2, 2))]
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(acts) == 4 and all(a.negative_slope == 0.2 for a in acts)
    assert isinstance(list(d.net)[-1], nn.Conv2d)  # no activation after the last conv
    out = d(torch.rand(2, 6, 45, 70))
    assert out.shape == (2, 1, 45, 70)
    with pytest.raises(ValueError, match="at least 32"):
        d(torch.rand(1, 6, 16, 16))


@pytest.mark.parametrize("variant", ["basic", "product", "scaling"])
def test_luc_discriminator_gives_one_logit_per_image(variant):
    d = LucDiscriminator(4, variant=variant, base_width=8)
    image, probs = torch.randn(3, 3, 20, 24), torch.rand(3, 4, 20, 24).softmax(1)
    assert d(image, probs).shape == (3,)
    assert d(torch.randn(3, 3, 40, 48), probs).shape == (3,)  # the image is resized to the label maps
    if variant == "product":
        enc = d.encode(image, probs)
        assert enc.shape == (3, 12, 20, 24)
        # channel c*3 + k is class c times colour channel k
        assert torch.allclose(enc[:, 1 * 3 + 2], probs[:, 1] * image[:, 2])


def test_luc_scaling_encoding():
    tau = 0.9
    probs = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1)
    onehot = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1)  # true class 1 with s = 0.3 < tau
    out = luc_scaling(onehot, probs, tau).flatten()
    assert out[1].item() == pytest.approx(0.9)
    assert out[0].item() == pytest.approx(0.5 * 0.1 / 0.7) and out[2].item() == pytest.approx(0.2 * 0.1 / 0.7)
    assert out.sum().item() == pytest.approx(1.0)
    confident = torch.tensor([0.02, 0.95, 0.03]).view(1, 3, 1, 1)  # s_l >= tau: the prediction itself
    assert torch.allclose(luc_scaling(onehot, confident, tau), confident)
    assert torch.all(luc_scaling(torch.zeros(1, 3, 1, 1), probs, tau) == 0)  # ignored pixel stays zero


# ----------------------------------------------------------------------------------- pretrained encoders
def _encoder_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sb if k.split(".")[0] in ("stem", "down"))


def test_unet_encoder_loads_from_a_classifier_file_and_keeps_its_own_decoder(tmp_path):
    from src.networks.unet import UNetClassifier

    torch.manual_seed(5)
    clf = UNetClassifier(10, base_width=4, depth=2, downsample=2)
    assert clf(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    path = tmp_path / "encoder.ckpt"
    torch.save({"state_dict": {f"network.{k}": v for k, v in clf.state_dict().items()}}, path)  # a run's checkpoint
    torch.manual_seed(0)
    plain = UNet(11, base_width=4, depth=2, downsample=2)
    torch.manual_seed(0)
    loaded = UNet(11, base_width=4, depth=2, downsample=2, backbone_weights_path=str(path))
    assert _encoder_equal(clf, loaded) and not _encoder_equal(clf, plain)
    decoder = [k for k in plain.state_dict() if k.split(".")[0] not in ("stem", "down")]
    assert decoder and all(torch.equal(plain.state_dict()[k], loaded.state_dict()[k]) for k in decoder)
    with pytest.raises(ConfigError, match="encoder's .* tensors"):
        UNet(11, base_width=8, depth=2, downsample=2, backbone_weights_path=str(path))  # another width
    with pytest.raises(ConfigError, match="pretrain"):
        UNet(11, base_width=4, depth=2, pretrain="imagenet")


def test_digits_pretraining_trains_once_and_is_cached(tmp_path, monkeypatch):
    import src.metrics.backbones as backbones
    import src.networks.pretraining as pretraining

    monkeypatch.setattr(pretraining, "DIGITS_DATA", {**pretraining.DIGITS_DATA, "size": 32, "num_train": 128,
                                                     "num_val": 32, "batch_size": 32})
    monkeypatch.setattr(pretraining, "DIGITS_EPOCHS", 1)
    calls = []
    original = backbones._train_preset
    monkeypatch.setattr(backbones, "_train_preset", lambda *a, **k: (calls.append(a[0]), original(*a, **k)))
    rng = torch.get_rng_state()
    first = UNet(11, base_width=4, depth=2, downsample=2, pretrain="digits", cache_dir=str(tmp_path))
    second = UNet(11, base_width=4, depth=2, downsample=2, pretrain="digits", cache_dir=str(tmp_path))
    assert calls == ["unet_digits"]  # trained once, then read from the cache
    assert _encoder_equal(first, second)
    files = list((tmp_path / "backbones").glob("unet_digits-*.pt"))
    assert len(files) == 1
    blob = torch.load(files[0], weights_only=True)
    assert blob["trained"]["steps"] == 4 and blob["network"]["_target_"].endswith("UNetClassifier")
    torch.set_rng_state(rng)
    torch.manual_seed(0)
    a = UNet(11, base_width=4, depth=2, downsample=2, pretrain="digits", cache_dir=str(tmp_path))
    torch.manual_seed(0)
    b = UNet(11, base_width=4, depth=2, downsample=2)
    head = [k for k in a.state_dict() if k.split(".")[0] not in ("stem", "down")]
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in head)  # same decoder either way
