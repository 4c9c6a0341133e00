"""Extra labeled scenes for the `scenes` segmentation dataset (seed 001: "GANs generate more training data for
the segmenter"): scenes rendered from real training-source digits or from a class-conditional GAN's digits,
added to the labeled training set only; the digits data restricted to the scenes' training digits (what the
GAN of experiments/digits_cgan_scenes.yaml trains on)."""
from __future__ import annotations

import logging
import os

import pytest
import torch
from omegaconf import OmegaConf

from src.data.digits import DigitsDataModule, load_digits_array
from src.data.scenes import (ScenesDataModule, generate_extra_scenes, generated_digits, generated_digits_agreement,
                             split_sources)
from src.data.segmentation import ConcatSource
from src.train import build_datamodule, build_model
from src.utils.errors import ConfigError, DataError
from tests.helpers import ROOT, compose

# the split of conf/dataset/scenes.yaml (which the GAN preset's digits use too)
SPLIT = dict(val_source_fraction=0.1, test_source_fraction=0.1, generation_seed=1234)
SMALL = dict(num_train=96, num_val=32, size=32, batch_size=8, labeled_fraction=0.25, **SPLIT)


def make(extra=None, **kwargs) -> ScenesDataModule:
    dm = ScenesDataModule(**{**SMALL, "extra_scenes": extra, **kwargs})
    dm.check()
    dm.setup()
    return dm


def save_gan_checkpoint(path, overrides: list[str], output_dir) -> str:
    """A checkpoint as src.run writes it (state_dict + run_config), of an untrained model of `overrides`."""
    cfg = compose(overrides, output_dir=output_dir)
    model = build_model(cfg, train=False)
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.save({"state_dict": model.state_dict(), "run_config": {"config": config, "choices": {}, "seed": 0}}, path)
    return str(path)


@pytest.fixture(scope="module")
def cgan_ckpt(tmp_path_factory) -> str:
    """An (untrained) class-conditional GAN of experiments/digits_cgan_scenes.yaml, with its EMA generator."""
    tmp = tmp_path_factory.mktemp("cgan")
    with torch.random.fork_rng(devices=[]):
        return save_gan_checkpoint(tmp / "last.ckpt", ["experiment=digits_cgan_scenes"], tmp)


def gan(ckpt: str, **kwargs) -> dict:
    return {"source": "gan", "ratio": 2.0, "generator": ckpt, "pool": 200, "measure_agreement": False, **kwargs}


# ------------------------------------------------------------------------------------------- real digits
def test_real_extras_join_the_labeled_set_only(tmp_path):
    plain = make(unlabeled=True, seed=3)
    dm = make({"source": "real", "ratio": 1.5}, unlabeled=True, seed=3, save_dir=str(tmp_path))
    assert dm.extra_count == 36 == round(1.5 * 24)  # ratio x the labeled real scenes (0.25 x 96)
    extra_ids = [f"extra_real_{i:05d}" for i in range(36)]
    assert dm.labeled_ids == plain.labeled_ids + extra_ids  # the labeled real subset is unchanged
    assert dm.unlabeled_ids == plain.unlabeled_ids and not any(i.startswith("extra") for i in dm.unlabeled_ids)
    assert (tmp_path / "labeled_ids.txt").read_text().split() == dm.labeled_ids
    assert len(dm.train_set) == 24 + 36 and len(dm.unlabeled_set) == 72
    assert isinstance(dm.train_set.source, ConcatSource) and dm.train_set.ids == dm.labeled_ids
    # val, test and the normalisation are those of the run without extras
    assert dm.mean == plain.mean and dm.std == plain.std and len(dm.val_set) == 32
    # the extra samples load like the others (normalised, masks with the scenes' labels)
    image, mask = dm.train_set[len(dm.train_set) - 1]
    assert image.shape == (3, 32, 32) and set(mask.unique().tolist()) <= set(range(11)) | {255}
    # an extra scene's digits come only from the scenes' training-source digits
    train_src, val_src, test_src = split_sources(5000, 0.1, 1234, 0.1)
    used = set(dm.extra_sources[dm.extra_sources >= 0].tolist())
    assert used and used <= set(train_src.tolist())
    assert not used & (set(val_src.tolist()) | set(test_src.tolist()))
    _, labels = load_digits_array("mnist5k", 28)
    placed = dm.extra_sources >= 0
    assert torch.equal(dm.extra_classes[placed], torch.from_numpy(labels)[dm.extra_sources[placed]])


def test_the_count_follows_the_labeled_real_scenes():
    assert make({"source": "real", "ratio": 0.5}, labeled_fraction=1.0).extra_count == 48
    assert make({"source": "real", "ratio": 1.0}, labeled_fraction=0.125).extra_count == 12
    assert make({"source": "real", "ratio": 0.01}).extra_count == 1  # at least one


def test_mask_classes_are_the_classes_of_the_placed_digits(cgan_ckpt):
    for extra in ({"source": "real", "ratio": 2.0}, gan(cgan_ckpt)):
        dm = make(extra)
        masks = dm.train_set.source.sources[1].masks.long()
        present = set()
        for mask, classes in zip(masks, dm.extra_classes):
            in_mask = set(mask.unique().tolist()) - {0, 255}
            assert in_mask <= {c + 1 for c in classes.tolist() if c >= 0}, extra["source"]
            present |= in_mask
        assert len(present) >= 8


def test_real_and_gan_extras_share_layouts(cgan_ckpt):
    real, generated = make({"source": "real", "ratio": 2.0}), make(gan(cgan_ckpt))
    assert torch.equal(real.extra_sources >= 0, generated.extra_sources >= 0)  # the same digit counts per scene
    assert not torch.equal(real.train_set.source.sources[1].images, generated.train_set.source.sources[1].images)


# ------------------------------------------------------------------------------------------- GAN digits
def test_gan_extras_are_balanced_deterministic_and_leave_the_global_rng_alone(cgan_ckpt, caplog):
    state = torch.random.get_rng_state()
    with caplog.at_level(logging.INFO, logger="src.data.scenes"):
        a = make(gan(cgan_ckpt), seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.extra_count == 48 and a.labeled_ids[-1] == "extra_gan_00047" and a.extra_class_agreement is None
    assert f"48 extra labeled scenes from 200 GAN digits (20 per class, EMA generator of {cgan_ckpt}" in caplog.text
    assert "may have seen" not in caplog.text  # the preset's digits are the scenes' training digits
    pool = generated_digits(cgan_ckpt, _stamp(cgan_ckpt), 200, 1234)
    assert pool["images"].shape == (200, 1, 28, 28) and 0 <= pool["images"].min() <= pool["images"].max() <= 1
    assert torch.equal(pool["labels"].bincount(), torch.full((10,), 20))
    placed = a.extra_sources >= 0
    assert torch.equal(a.extra_classes[placed], pool["labels"][a.extra_sources[placed]])
    # the same scenes in another data module and another run seed, also when generated again
    first = a.train_set.source.sources[1]
    generated_digits.cache_clear()
    generate_extra_scenes.cache_clear()
    b = make(gan(cgan_ckpt), seed=5)
    second = b.train_set.source.sources[1]
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)
    # another generation seed draws other digits
    c = make(gan(cgan_ckpt), generation_seed=99)
    assert not torch.equal(first.images, c.train_set.source.sources[1].images)


def _stamp(ckpt: str) -> tuple[int, int]:
    stat = os.stat(ckpt)
    return stat.st_mtime_ns, stat.st_size


def test_agreement_with_the_digits_classifier_is_measured_and_logged(cgan_ckpt, caplog):
    with caplog.at_level(logging.INFO, logger="src.data.scenes"):
        dm = make(gan(cgan_ckpt, measure_agreement=True), cache_dir=str(ROOT / ".cache"))
    assert 0 <= dm.extra_class_agreement <= 1
    assert f"agrees with the conditioned class on {dm.extra_class_agreement:.1%}" in caplog.text
    assert generated_digits_agreement.cache_info().currsize >= 1


def test_a_generator_trained_on_all_digits_is_flagged(tmp_path, caplog):
    ckpt = save_gan_checkpoint(tmp_path / "all.ckpt", ["experiment=digits_cgan_scenes",
                                                       "dataset.only_scene_training_digits=false"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="src.data.scenes"):
        make(gan(ckpt, pool=20), num_train=16)
    assert "may have seen the digits of val and test scenes" in caplog.text


# ------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("extra,key", [
    ({"source": "gan"}, "dataset.extra_scenes.generator"),
    ({"source": "gan", "generator": None}, "experiment=digits_cgan_scenes"),
    ({"source": "fake"}, "dataset.extra_scenes.source"),
    ({"ratio": 1.0}, "dataset.extra_scenes.source"),
    ({"source": "real", "ratio": 0}, "dataset.extra_scenes.ratio"),
    ({"source": "real", "ratio": -1.0}, "dataset.extra_scenes.ratio"),
    ({"source": "real", "pool": 5}, "dataset.extra_scenes.pool"),
    ({"source": "real", "count": 5}, "unknown key"),
    ("real", "dataset.extra_scenes"),
])
def test_bad_extra_scenes_are_config_errors(extra, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        ScenesDataModule(**SMALL, extra_scenes=extra)


def test_a_missing_generator_says_how_to_make_one(tmp_path):
    dm = ScenesDataModule(**SMALL, extra_scenes=gan(str(tmp_path / "nope.ckpt")))
    with pytest.raises(DataError) as err:
        dm.check()
    message = str(err.value)
    assert "nope.ckpt" in message and "python -m src.run experiment=digits_cgan_scenes" in message
    assert "<run>/checkpoints/last.ckpt" in message
    with pytest.raises(DataError, match="no checkpoint"):
        dm.setup()


def test_a_checkpoint_that_is_not_a_conditional_gan_is_refused(tmp_path):
    dcgan = save_gan_checkpoint(tmp_path / "dcgan.ckpt", [], tmp_path)  # the default run: unconditional
    with pytest.raises(ConfigError, match="class-conditional GAN with 10 classes"):
        ScenesDataModule(**SMALL, extra_scenes=gan(dcgan)).check()
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="corrupt.ckpt"):
        ScenesDataModule(**SMALL, extra_scenes=gan(str(corrupt))).check()


def test_yaml_key_composes(tmp_path):
    cfg = compose(["dataset=scenes", "dataset.num_train=32", "dataset.num_val=16", "dataset.size=32",
                   "dataset.extra_scenes={source:real,ratio:0.5}"], output_dir=tmp_path)
    dm = build_datamodule(cfg)
    dm.check()
    dm.setup()
    assert dm.extra_count == 16 and dm.labeled_ids[-1] == "extra_real_00015"
    assert compose(["dataset=scenes"], output_dir=tmp_path).dataset.extra_scenes is None


# ------------------------------------------------------------------------------------------- GAN training digits
def test_digits_restricted_to_the_scenes_training_digits():
    dm = DigitsDataModule(only_scene_training_digits=True)
    dm.setup()
    train_src, val_src, test_src = split_sources(5000, 0.1, 1234, 0.1)
    pool = torch.cat([dm.train_indices, dm.val_indices])
    assert len(pool) == 4000 and len(dm.val_set) == 500 and len(dm.train_set) == 3500
    assert torch.equal(pool.sort().values, train_src)
    assert not set(pool.tolist()) & (set(val_src.tolist()) | set(test_src.tolist()))
    images, labels = load_digits_array("mnist5k", 28)
    x, y = dm.train_set.tensors
    assert torch.equal(x, torch.from_numpy(images)[dm.train_indices] * 2 - 1)
    assert torch.equal(y, torch.from_numpy(labels)[dm.train_indices])
    default = DigitsDataModule()
    default.setup()
    assert len(default.train_set) == 4500 and len(torch.cat([default.train_indices, default.val_indices])) == 5000
    with pytest.raises(ConfigError, match="only_scene_training_digits"):
        DigitsDataModule(source="sklearn", only_scene_training_digits=True)
    with pytest.raises(ConfigError, match="scene_split"):
        DigitsDataModule(scene_split=[0.5, 0.6, 1])


def test_the_preset_trains_on_the_scenes_training_digits(tmp_path):
    cfg = compose(["experiment=digits_cgan_scenes"], output_dir=tmp_path)
    assert cfg.model.num_classes == 10 and cfg.model.ema_decay is not None
    assert cfg.dataset.only_scene_training_digits is True
    scenes = compose(["dataset=scenes"], output_dir=tmp_path).dataset
    assert list(cfg.dataset.scene_split) == [scenes.val_source_fraction, scenes.test_source_fraction,
                                             scenes.generation_seed]


@pytest.mark.parametrize("threshold, warned", [(1.01, True), (0.0, False)])
def test_a_weakly_conditional_generator_gets_a_warning(cgan_ckpt, caplog, monkeypatch, threshold, warned):
    monkeypatch.setattr("src.data.scenes.MIN_CLASS_AGREEMENT", threshold)
    with caplog.at_level(logging.INFO, logger="src.data.scenes"):
        make(gan(cgan_ckpt, measure_agreement=True), cache_dir=str(ROOT / ".cache"))
    assert ("weakly conditional" in caplog.text) is warned
