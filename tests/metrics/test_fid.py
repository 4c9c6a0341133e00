"""FID / KID / IS (src/metrics/gan_quality.py) and their feature extractors (src/metrics/backbones.py)."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from src.metrics import backbones as bb_mod
from src.metrics.backbones import FeatureBackbone, Preset, load_backbone
from src.metrics.gan_quality import GANQuality, frechet_distance
from src.networks.classifier import ConvNet
from src.utils.errors import ConfigError, UserError


def tiny_backbone(seed: int = 0) -> FeatureBackbone:
    torch.manual_seed(seed)
    net = ConvNet((1, 16, 16), num_classes=10, widths=[4, 8], feature_dim=12)
    return FeatureBackbone(net, "tiny", "memory", "0" * 64, (1, 16, 16), 12, 10, kind="classifier")


def images(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 16, 16, generator=g) * 1.6 - 0.8 + shift).clamp(-1, 1)


def run(metric: GANQuality, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    metric.reset()
    for batch in real.split(64):
        metric.update(batch, real=True)
    metric.update(fake, real=False)
    return {k: float(v) for k, v in metric.compute().items()}


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift(tmp_path):
    metric = GANQuality(tiny_backbone(), cache_dir=str(tmp_path), kid_subsets=20, is_splits=2)
    x = images(200, 0)
    same = run(metric, x, x)
    assert abs(same["fid"]) < 1e-3 and abs(same["kid"]) < 1e-2 * max(1.0, same["kid_std"] + 1)
    shifted = run(metric, x, images(200, 1, shift=0.5))
    assert shifted["fid"] > 100 * max(abs(same["fid"]), 1e-5)
    assert 1.0 <= same["is"] <= 10.0 and set(same) == {"fid", "kid", "kid_std", "is", "is_std"}


def test_fid_matches_a_direct_scipy_computation_on_the_same_features(tmp_path):
    backbone = tiny_backbone()
    metric = GANQuality(backbone, which=["fid"], cache_dir=str(tmp_path))
    real, fake = images(300, 2), images(250, 3, shift=0.2)
    got = run(metric, real, fake)["fid"]
    fr = backbone(real)[0].double().numpy()
    ff = backbone(fake)[0].double().numpy()
    want = frechet_distance(fr.mean(0), np.cov(fr, rowvar=False), ff.mean(0), np.cov(ff, rowvar=False))
    assert want > 1e-3
    assert math.isclose(got, want, rel_tol=1e-3), (got, want)


def test_real_statistics_are_cached_on_disk_and_reused(tmp_path):
    backbone = tiny_backbone()
    real, fake = images(128, 4), images(100, 5)
    first = run(GANQuality(backbone, cache_dir=str(tmp_path), kid_subsets=10), real, fake)
    files = list((tmp_path / "gan_metrics").glob("real-*.pt"))
    assert len(files) == 1
    calls = []
    extract = backbone.extract
    backbone.extract = lambda x: (calls.append(len(x)), extract(x))[1]  # count images through the network
    try:
        again = GANQuality(backbone, cache_dir=str(tmp_path), kid_subsets=10)
        second = run(again, real, fake)
        assert sum(calls) == len(fake), "the real images did not go through the backbone again"
        calls.clear()
        assert run(again, real, fake) == second and sum(calls) == len(fake)  # in memory across validations
        calls.clear()
        run(again, images(128, 6), fake)  # other real images: other statistics
        assert sum(calls) == 128 + len(fake) and len(list((tmp_path / "gan_metrics").glob("real-*.pt"))) == 2
    finally:
        backbone.extract = extract
    assert second == first
    assert again.protocol["real_stats_cache"] and again.protocol["num_real"] == 128
    assert again.protocol["num_fake"] == 100 and again.protocol["backbone_sha256"] == "0" * 64


def test_compute_is_deterministic_leaves_the_global_rng_alone_and_is_not_in_state_dict(tmp_path):
    metric = GANQuality(tiny_backbone(), cache_dir=str(tmp_path), kid_subsets=10)
    real, fake = images(100, 7), images(100, 8)
    state = torch.get_rng_state()
    a = run(metric, real, fake)
    assert torch.equal(state, torch.get_rng_state())
    assert run(metric, real, fake) == a
    assert list(metric.state_dict()) == [], "the frozen backbone stays out of checkpoints"
    assert sum(p.numel() for p in metric.parameters()) == 0


def test_resize_and_grey_to_rgb_are_recorded(tmp_path):
    torch.manual_seed(0)
    net = ConvNet((3, 16, 16), num_classes=5, widths=[4], feature_dim=6)
    backbone = FeatureBackbone(net, "rgb", "memory", "1" * 64, (3, 16, 16), 6, 5, kind="classifier")
    metric = GANQuality(backbone, cache_dir=None, kid_subsets=5, is_splits=1)
    g = torch.Generator().manual_seed(0)
    out = run(metric, torch.rand(40, 1, 28, 28, generator=g) * 2 - 1, torch.rand(40, 1, 28, 28, generator=g) * 2 - 1)
    assert math.isfinite(out["fid"])
    assert "resized 28x28 -> 16x16" in metric.protocol["resize"] and "grey" in metric.protocol["resize"]


# ----------------------------------------------------------------------------------------- backbones
@pytest.fixture
def tiny_preset(monkeypatch):
    preset = Preset(datamodule={"_target_": "src.data.digits.DigitsDataModule", "source": "sklearn", "size": 8,
                                "num_val": 200, "batch_size": 64, "val_batch_size": 200},
                    network={"_target_": "src.networks.classifier.ConvNet", "image_shape": [1, 8, 8],
                             "num_classes": 10, "widths": [8], "feature_dim": 16},
                    num_classes=10, epochs=2, lr=3e-3)
    monkeypatch.setitem(bb_mod.PRESETS, "tiny_cnn", preset)
    trained = []
    original = bb_mod._train_preset

    def counting(*args, **kwargs):
        trained.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(bb_mod, "_train_preset", counting)
    return trained


def test_training_a_backbone_leaves_the_global_rng_alone(tmp_path, tiny_preset):
    state = torch.get_rng_state()
    backbone = load_backbone("tiny_cnn", cache_dir=tmp_path)
    assert torch.equal(state, torch.get_rng_state()), "a seeded run's random stream does not depend on the cache"
    assert tiny_preset == ["tiny_cnn"] and backbone.info["trained"]["val_acc"] > 0.5
    assert load_backbone("tiny_cnn", cache_dir=tmp_path) is backbone and tiny_preset == ["tiny_cnn"]


def test_a_missing_preset_backbone_is_trained_once_even_by_concurrent_callers(tmp_path, tiny_preset):
    results, errors = [], []

    def load():
        try:
            results.append(load_backbone("tiny_cnn", cache_dir=tmp_path))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    assert tiny_preset == ["tiny_cnn"], "trained once; the other caller waited for the lock and loaded it"
    files = list((tmp_path / "backbones").glob("tiny_cnn-*.pt"))
    assert len(files) == 1 and not list((tmp_path / "backbones").glob("*.tmp"))
    assert (tmp_path / ".gitignore").read_text().strip().endswith("*")
    backbone = results[0]
    assert backbone.info["trained"]["val_acc"] > 0.5 and backbone.feature_dim == 16
    blob = torch.load(files[0], weights_only=True)  # plain data
    assert blob["format"] == bb_mod.FORMAT and backbone.sha256 == bb_mod.sha256_file(files[0])


def test_a_corrupt_backbone_file_is_a_clear_error(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read"):
        load_backbone("digits_cnn", checkpoint=str(path))
    with pytest.raises(UserError, match="no file"):
        load_backbone("digits_cnn", checkpoint=str(tmp_path / "missing.ckpt"))
    with pytest.raises(ConfigError, match="unknown"):
        load_backbone("nope")


def test_inception_needs_a_local_file_and_never_downloads(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(ConfigError, match="INCEPTION_WEIGHTS"):
        load_backbone("inception", inception_weights=None)
    with pytest.raises(ConfigError, match="does not exist"):
        load_backbone("inception", inception_weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"a": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="torchvision Inception-v3"):
        load_backbone("inception", inception_weights=str(bad))


@pytest.mark.slow
def test_inception_from_a_local_torchvision_state_dict(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), weights)
    backbone = load_backbone("inception", inception_weights=str(weights))
    features, logits = backbone(torch.rand(2, 1, 28, 28) * 2 - 1)
    assert features.shape == (2, 2048) and logits.shape == (2, 1000)
    assert backbone.describe()["input"] == [3, 299, 299] and backbone.sha256 == bb_mod.sha256_file(weights)
