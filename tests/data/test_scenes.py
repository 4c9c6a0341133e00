"""The offline `scenes` segmentation dataset and the semi-supervised interface every segmentation data
module shares: deterministic generation, label set, void band, disjoint source digits, seeded labeled
subset saved with the run, {"labeled", "unlabeled"} loaders that Lightning combines and resumes exactly."""
from __future__ import annotations

import time

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from src.data.sampling import ResumableBatchSampler, ResumableDataLoader
from src.data.scenes import NUM_CLASSES, ScenesDataModule, generate_scenes, render_scenes, _digit_images
from src.train import build_datamodule
from src.utils.errors import ConfigError
from tests.helpers import compose

SMALL = dict(num_train=96, num_val=32, size=32)


def make(**kwargs) -> ScenesDataModule:
    args = {**SMALL, "batch_size": 8, **kwargs}
    dm = ScenesDataModule(**args)
    dm.setup()
    return dm


# ------------------------------------------------------------------------------------------- generation
def test_generation_is_deterministic_and_independent_of_the_run_seed():
    a = generate_scenes(96, 32, 32)
    generate_scenes.cache_clear()
    b = generate_scenes(96, 32, 32)
    for key in ("train_images", "train_masks", "val_images", "val_masks"):
        assert torch.equal(a[key], b[key]), key
    c = generate_scenes(96, 32, 32, generation_seed=99)
    assert not torch.equal(a["train_images"], c["train_images"])
    x0, _ = make(seed=0).train_set.source.load(5)
    x1, _ = make(seed=7).train_set.source.load(5)
    assert torch.equal(x0, x1)  # the run seed picks subsets and orders, not the data


def test_generation_is_fast():
    digits, classes = _digit_images()
    start = time.process_time()
    images, masks = render_scenes(digits, classes, 1000, size=64, seed=1)
    assert time.process_time() - start < 5  # ~0.4 s of CPU per 1,000 scenes on one core
    assert images.shape == (1000, 3, 64, 64) and images.dtype == torch.uint8
    assert masks.shape == (1000, 64, 64) and masks.dtype == torch.uint8


def test_labels_classes_and_void_band():
    data = generate_scenes(96, 32, 32)
    masks = torch.cat([data["train_masks"], data["val_masks"]]).long()
    values = set(masks.unique().tolist())
    assert values <= set(range(NUM_CLASSES)) | {255}
    assert 0 in values and 255 in values and len(values - {0, 255}) >= 8
    void = masks == 255
    assert 0.005 < void.float().mean() < 0.2
    # the band lies just outside objects: every void pixel is near a (non-void) digit pixel
    labels = masks.masked_fill(void, -1).float()[:, None]
    near = F.max_pool2d(labels, 5, stride=1, padding=2)[:, 0]
    assert (near[void] >= 1).all()
    # digits are not void: every scene with a digit keeps digit pixels
    assert ((masks > 0) & (masks < 255)).flatten(1).any(1).float().mean() > 0.9
    flat = generate_scenes(96, 32, 32, void_width=0)
    assert not (flat["train_masks"] == 255).any()


def test_images_are_textured_not_thresholdable():
    data = generate_scenes(96, 32, 32)
    x, m = data["train_images"].float() / 255, data["train_masks"].long()
    assert x.std(dim=(2, 3)).mean() > 0.08  # the background varies within an image
    lum = x.mean(1)
    bg, fg = lum[m == 0], lum[(m > 0) & (m < 255)]
    # luminance overlaps between classes: no global threshold separates digits from background
    assert fg.min() < bg.median() < fg.max()


def test_train_and_val_use_different_source_digits():
    data = generate_scenes(96, 32, 32)
    train, val = set(data["train_sources"].tolist()), set(data["val_sources"].tolist())
    assert train and val and not train & val
    assert len(train) + len(val) == 5000


# ------------------------------------------------------------------------------- labeled subset, saved
def test_labeled_subset_is_seeded_nested_and_saved(tmp_path):
    dm = make(labeled_fraction=0.25, seed=3, save_dir=str(tmp_path / "run"))
    assert len(dm.labeled_ids) == 24 and len(dm.unlabeled_ids) == 72
    assert not set(dm.labeled_ids) & set(dm.unlabeled_ids)
    saved = (tmp_path / "run" / "labeled_ids.txt").read_text().split()
    assert saved == dm.labeled_ids
    assert make(labeled_fraction=0.25, seed=3).labeled_ids == dm.labeled_ids
    assert make(labeled_fraction=0.25, seed=4).labeled_ids != dm.labeled_ids
    eighth = make(labeled_fraction=0.125, seed=3).labeled_ids
    assert set(eighth) < set(dm.labeled_ids)
    full = make(labeled_fraction=1.0, seed=3)
    assert len(full.labeled_ids) == 96 and full.unlabeled_set is None


@pytest.mark.parametrize("bad", [0, 0.0, 1.5, -0.1, True, "half", "3/2"])
def test_labeled_fraction_is_checked(bad):
    with pytest.raises(ConfigError, match="labeled_fraction"):
        ScenesDataModule(labeled_fraction=bad, **SMALL)
    assert ScenesDataModule(labeled_fraction="1/8", **SMALL).labeled_fraction == 0.125


# ------------------------------------------------------------------------------------------- loaders
def test_plain_loader_and_batch_format():
    dm = make(labeled_fraction=0.5)
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableDataLoader) and isinstance(loader.batch_sampler, ResumableBatchSampler)
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (8, 32, 32) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= set(range(NUM_CLASSES)) | {255}
    assert len(loader) == 48 // 8
    vx, vy = next(iter(dm.val_dataloader()))
    assert vx.shape[1:] == (3, 32, 32) and vy.dtype == torch.int64
    # normalised with the module's statistics; de-normalising gives the stored pixels back
    mean, std = torch.tensor(dm.mean).view(1, 3, 1, 1), torch.tensor(dm.std).view(1, 3, 1, 1)
    stored = generate_scenes(96, 32, 32)["val_images"][: len(vx)].float() / 255
    assert torch.allclose(vx * std + mean, stored, atol=1e-5)
    assert dm.num_classes == 11 and dm.ignore_index == 255 and len(dm.class_names) == 11
    assert dm.shape == (3, 32, 32)


def test_unlabeled_gives_two_resumable_loaders():
    dm = make(labeled_fraction=0.25, unlabeled=True, seed=1)
    loaders = dm.train_dataloader()
    assert set(loaders) == {"labeled", "unlabeled"}
    lab, unl = loaders["labeled"], loaders["unlabeled"]
    for loader in (lab, unl):
        assert isinstance(loader, ResumableDataLoader) and isinstance(loader.batch_sampler, ResumableBatchSampler)
    assert lab.batch_sampler.seed != unl.batch_sampler.seed
    assert len(lab) == len(unl) == 72 // 8  # the small labeled set is cycled to the unlabeled length
    for (xl, yl), (xu, yu) in zip(lab, unl):
        assert xl.shape == xu.shape == (8, 3, 32, 32) and yl.dtype == yu.dtype == torch.int64
        assert ((yu > 0) & (yu < 255)).any()  # the unlabeled loader still carries the true masks
    positions = [i for batch in lab.batch_sampler for _, i in batch]
    assert sorted(positions) == list(range(72))  # (epoch, index) keys, every position once per epoch
    # no labeled/unlabeled mixing: each view only reads its own ids
    assert set(unl.dataset.ids) == set(dm.unlabeled_ids) and set(lab.dataset.ids) == set(dm.labeled_ids)
    plain = make(labeled_fraction=1.0, unlabeled=True).train_dataloader()
    assert isinstance(plain, ResumableDataLoader)  # nothing unlabeled: a plain loader


def test_cycled_labeled_view_covers_every_sample_evenly():
    dm = make(labeled_fraction=0.25, unlabeled=True, seed=1)
    view = dm.train_set.with_length(72)
    for epoch in (0, 1):
        counts = torch.bincount(torch.tensor([view._source_index(epoch, p) for p in range(72)]), minlength=96)
        used = counts[counts > 0]
        assert len(used) == 24 and used.min() == used.max() == 3


def test_augmentation_is_seeded_by_epoch_and_index():
    dm = make(augment={"scale": [0.75, 1.5], "crop": 24, "flip": False}, seed=2)
    ds = dm.train_set
    a, b = ds[(0, 5)], ds[(0, 5)]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0].shape == (3, 24, 24)
    assert not torch.equal(ds[(1, 5)][0], a[0])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 24, 24) and y.shape == (8, 24, 24)
    assert set(y.unique().tolist()) <= set(range(NUM_CLASSES)) | {255}


# ------------------------------------------------------------------------- Lightning: combine + resume
class Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Conv2d(3, NUM_CLASSES, 1)
        self.seen: list[tuple[int, float, float]] = []

    def training_step(self, batch, batch_idx):
        (xl, yl), (xu, _) = batch["labeled"], batch["unlabeled"]
        self.seen.append((self.global_step, round(float(xl.sum()), 3), round(float(xu.sum()), 3)))
        return F.cross_entropy(self.net(xl), yl, ignore_index=255)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(tmp_path, callbacks=()):
    return pl.Trainer(max_steps=14, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0,
                      num_sanity_val_steps=0, callbacks=list(callbacks), default_root_dir=tmp_path)


@pytest.mark.filterwarnings("ignore:.*validation_step.*", "ignore:.*callbacks used to create the checkpoint.*")
def test_lightning_combines_the_loaders_and_resumes_exactly(tmp_path):
    """9 batches per epoch; a checkpoint at step 4 (mid-epoch); the resumed run sees steps 5..14 (across
    the epoch boundary) exactly as the uninterrupted run did."""
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1,
                                        filename="{step}")
    full = Recorder()
    args = dict(labeled_fraction=0.25, unlabeled=True, seed=5, augment={"crop": 28, "flip": True})
    _trainer(tmp_path, [ckpt]).fit(full, datamodule=make(**args))
    assert len(full.seen) == 14
    resumed = Recorder()
    _trainer(tmp_path).fit(resumed, datamodule=make(**args), ckpt_path=str(tmp_path / "ckpt" / "step=4.ckpt"))
    assert resumed.seen == full.seen[4:]


# ------------------------------------------------------------------------------------------- config
def test_yaml_composes_and_builds(tmp_path):
    cfg = compose(["dataset=scenes", "dataset.num_train=64", "dataset.num_val=16", "dataset.size=32",
                   "dataset.labeled_fraction=0.5", "dataset.unlabeled=true"], output_dir=tmp_path)
    assert list(cfg.dataset.meta.shape) == [3, 32, 32]
    assert cfg.dataset.meta.num_classes == 11 and cfg.dataset.meta.ignore_index == 255
    assert cfg.dataset.meta.monitor.metric == "val/mIoU" and cfg.dataset.meta.monitor.mode == "max"
    dm = build_datamodule(cfg)
    assert isinstance(dm, ScenesDataModule)
    dm.setup()
    assert (tmp_path / "labeled_ids.txt").read_text().split() == dm.labeled_ids
    assert set(dm.train_dataloader()) == {"labeled", "unlabeled"}


# ------------------------------------------------------------------------------------------- test split
def test_test_split_uses_its_own_digits_and_leaves_the_training_scenes_as_they_were():
    from src.data.scenes import split_sources

    train, val, test = split_sources(5000, 0.1, 1234, 0.1)
    assert len(val) == 500 and len(test) == 500 and len(train) == 4000
    assert not (set(train.tolist()) & set(val.tolist()) or set(train.tolist()) & set(test.tolist())
                or set(val.tolist()) & set(test.tolist()))
    old_train, old_val, none = split_sources(5000, 0.2, 1234)
    assert torch.equal(train, old_train) and len(none) == 0  # a test split takes digits from val's former share
    with_test = generate_scenes(96, 32, 32, val_source_fraction=0.1, num_test=24, test_source_fraction=0.1)
    without = generate_scenes(96, 32, 32, val_source_fraction=0.2)
    assert torch.equal(with_test["train_images"], without["train_images"])
    assert with_test["test_images"].shape == (24, 3, 32, 32) and "test_images" not in without
    assert not torch.equal(with_test["test_images"][:24], with_test["val_images"][:24])


def test_test_loader_and_refusals():
    dm = make(num_test=24, test_source_fraction=0.1, val_source_fraction=0.1)
    assert dm.has_test_split and len(dm.test_set) == 24
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape[1:] == (3, 32, 32) and y.shape[1:] == (32, 32)
    plain = make()
    assert not plain.has_test_split
    with pytest.raises(Exception, match="no test split"):
        plain.test_dataloader()
    with pytest.raises(ConfigError, match="test_source_fraction"):
        ScenesDataModule(**SMALL, num_test=10, test_source_fraction=0.0)


def test_digit_crops_come_from_the_training_digits_with_their_classes():
    from src.data.digit_crops import DigitCropsDataModule, generate_crops
    from src.data.scenes import split_sources

    xt, yt, st, xv, yv, sv = generate_crops(200, 50, 32, (0.375, 0.625), 0.1, 0.1, 1234)
    digits, classes = _digit_images()
    train, _, _ = split_sources(len(digits), 0.1, 1234, 0.1)
    assert set(st.tolist()) | set(sv.tolist()) <= set(train.tolist())  # never a val or test scene's digit
    assert torch.equal(yt, classes[st].long()) and torch.equal(yv, classes[sv].long())
    assert xt.shape == (200, 3, 32, 32) and len(set(yt.tolist())) == 10
    dm = DigitCropsDataModule(size=32, num_train=200, num_val=50, batch_size=16)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and abs(float(dm.train_set.tensors[0].mean())) < 1e-3
