"""Real segmentation datasets read from a local root: tiny fixtures written in each dataset's real on-disk
layout (VOC 2012 palette PNGs and the SBD "SegmentationClassAug" variant, Cityscapes labelIds PNGs,
Oxford-IIIT Pet trimaps) load with the right class ids; bad masks fail with a DataError naming the file;
missing data names the path, the layout and how to point at it; the yamls compose and build."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.cityscapes import CityscapesDataModule
from src.data.pets import PetsDataModule
from src.data.sampling import ResumableDataLoader
from src.data.voc import VOCDataModule, voc_colormap
from src.train import build_datamodule
from src.utils.errors import DataError
from tests.helpers import compose

H, W = 30, 40
VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000002", "2008_000003"]
VOC_VAL = ["2007_000033", "2009_000001"]
VOC_AUG_EXTRA = ["2008_100001", "2008_100002"]


# --------------------------------------------------------------------------------------- fixture writers
def write_image(path: Path, seed: int, size: tuple[int, int] = (H, W)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def voc_mask(seed: int, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """Background, two objects of classes 1..20, a 1-pixel void border around each."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(size, np.uint8)
    for _ in range(2):
        c = int(rng.integers(1, 21))
        top, left = int(rng.integers(1, size[0] - 12)), int(rng.integers(1, size[1] - 12))
        mask[top - 1:top + 11, left - 1:left + 11] = 255
        mask[top:top + 10, left:left + 10] = c
    return mask


def save_palette_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(mask, mode="P")
    im.putpalette(voc_colormap().flatten().tolist())
    im.save(path)


def write_voc(root: Path, aug: bool = False) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 under `root`; returns the masks written, by id."""
    base = root / "VOCdevkit" / "VOC2012"
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True, exist_ok=True)
    masks = {}
    for k, i in enumerate(VOC_TRAIN + VOC_VAL + (VOC_AUG_EXTRA if aug else [])):
        write_image(base / "JPEGImages" / f"{i}.jpg", k)
        masks[i] = voc_mask(k)
        if i not in VOC_AUG_EXTRA:
            save_palette_png(base / "SegmentationClass" / f"{i}.png", masks[i])
        if aug:  # SBD converted to VOC indices: grayscale PNGs
            (base / "SegmentationClassAug").mkdir(exist_ok=True)
            Image.fromarray(masks[i], mode="L").save(base / "SegmentationClassAug" / f"{i}.png")
    (sets / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (sets / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (sets / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    if aug:  # DeepLab-style list: image and mask paths
        lines = [f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in VOC_TRAIN + VOC_AUG_EXTRA]
        (sets / "train_aug.txt").write_text("\n".join(lines) + "\n")
    return masks


CITY_LABEL_IDS = np.array([0, 1, 4, 7, 8, 11, 26, 33, 9, 24], np.uint8)
CITY_TRAIN_IDS = np.array([255, 255, 255, 0, 1, 2, 13, 18, 255, 11], np.int64)
CITY_FRAMES = {"train": [("aachen", "000000", "000019"), ("bochum", "000000", "000313")],
               "val": [("frankfurt", "000000", "000294")]}


def write_cityscapes(root: Path) -> dict[str, np.ndarray]:
    """leftImg8bit/ and gtFine/ with labelIds masks made of CITY_LABEL_IDS; returns label ids by stem."""
    written = {}
    for k, (split, frames) in enumerate(CITY_FRAMES.items()):
        for j, (city, seq, frame) in enumerate(frames):
            stem = f"{city}_{seq}_{frame}"
            write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 10 * k + j)
            rng = np.random.default_rng(10 * k + j)
            ids = CITY_LABEL_IDS[rng.integers(0, len(CITY_LABEL_IDS), (H, W))]
            ids[0, : len(CITY_LABEL_IDS)] = CITY_LABEL_IDS  # every id occurs
            gt = root / "gtFine" / split / city
            gt.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids, mode="L").save(gt / f"{stem}_gtFine_labelIds.png")
            # the other gtFine files of the real layout, which the loader must not pick up
            Image.fromarray(np.zeros((H, W), np.uint8), mode="L").save(gt / f"{stem}_gtFine_instanceIds.png")
            written[stem] = ids
    return written


PET_TRAIN = ["Abyssinian_1", "Abyssinian_10", "american_bulldog_100", "yorkshire_terrier_5"]
PET_TEST = ["Bengal_12", "pug_3"]


def write_pets(root: Path, sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, np.ndarray]:
    """oxford-iiit-pet/ with JPEG images, trimaps (1 pet, 2 background, 3 border) and the split lists."""
    base = root / "oxford-iiit-pet"
    (base / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    trimaps = {}
    for k, name in enumerate(PET_TRAIN + PET_TEST):
        size = (sizes or {}).get(name, (H, W))
        write_image(base / "images" / f"{name}.jpg", k, size)
        tri = np.full(size, 2, np.uint8)
        tri[5:20, 8:30] = 3
        tri[6:19, 9:29] = 1
        Image.fromarray(tri, mode="L").save(base / "annotations" / "trimaps" / f"{name}.png")
        trimaps[name] = tri
    for split, names in (("trainval", PET_TRAIN), ("test", PET_TEST)):
        rows = [f"{n} {k + 1} {1 + k % 2} {k + 1}" for k, n in enumerate(names)]
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return trimaps


def ready(dm):
    dm.setup()
    return dm


# ------------------------------------------------------------------------------------------------ VOC
def test_voc_loads_palette_masks(tmp_path):
    masks = write_voc(tmp_path)
    dm = ready(VOCDataModule(root=str(tmp_path / "VOCdevkit" / "VOC2012"), batch_size=2, val_batch_size=2,
                             augment={"scale": [0.5, 1.5], "crop": 321, "flip": True}))
    assert dm.num_classes == 21 and dm.ignore_index == 255 and dm.class_names[0] == "background"
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2
    for k, i in enumerate(VOC_VAL):
        image, mask = dm.val_set[k]
        assert image.shape == (3, H, W) and image.dtype == torch.float32
        assert mask.dtype == torch.int64 and np.array_equal(mask.numpy(), masks[i])
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 321, 321) and y.shape == (2, 321, 321)  # Hung's crop, padded with void
    assert set(y.unique().tolist()) <= set(range(21)) | {255}
    assert (y == 255).float().mean() > 0.5
    # the parent of VOCdevkit works as a root too
    assert len(ready(VOCDataModule(root=str(tmp_path), batch_size=2)).val_set) == 2


def test_voc_rgb_colour_masks_are_decoded(tmp_path):
    masks = write_voc(tmp_path)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    i = VOC_VAL[0]
    Image.fromarray(voc_colormap()[masks[i]], mode="RGB").save(base / "SegmentationClass" / f"{i}.png")
    dm = ready(VOCDataModule(root=str(base), batch_size=2, augment=None))
    assert np.array_equal(dm.val_set[0][1].numpy(), masks[i])


def test_voc_aug_reads_the_sbd_list_and_masks(tmp_path):
    masks = write_voc(tmp_path, aug=True)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    dm = ready(VOCDataModule(root=str(base), aug=True, batch_size=2, augment=None))
    assert dm.train_split == "train_aug"
    assert sorted(dm.labeled_ids) == sorted(VOC_TRAIN + VOC_AUG_EXTRA)
    k = dm.labeled_ids.index(VOC_AUG_EXTRA[0])
    assert np.array_equal(dm.train_set[k][1].numpy(), masks[VOC_AUG_EXTRA[0]])
    with open(base / "ImageSets" / "Segmentation" / "train_aug.txt", "a") as fh:
        fh.write(f"/JPEGImages/{VOC_VAL[0]}.jpg /SegmentationClassAug/{VOC_VAL[0]}.png\n")
    with pytest.raises(DataError, match=VOC_VAL[0]):
        ready(VOCDataModule(root=str(base), aug=True, batch_size=2))


def test_voc_bad_masks_fail_naming_the_file(tmp_path):
    masks = write_voc(tmp_path)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    bad = masks[VOC_TRAIN[2]].copy()
    bad[3, 3] = 50
    save_palette_png(base / "SegmentationClass" / f"{VOC_TRAIN[2]}.png", bad)
    with pytest.raises(DataError, match=rf"{VOC_TRAIN[2]}\.png.*\[50\]"):
        ready(VOCDataModule(root=str(base), batch_size=2, scan_masks=True))
    lazy = ready(VOCDataModule(root=str(base), batch_size=2, scan_masks=False))  # large datasets: on read
    k = lazy.labeled_ids.index(VOC_TRAIN[2])
    with pytest.raises(DataError, match=rf"{VOC_TRAIN[2]}\.png"):
        lazy.train_set[k]


def test_voc_binary_0_255_masks_fail(tmp_path):
    write_voc(tmp_path)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    binary = np.zeros((H, W), np.uint8)
    binary[5:25, 5:30] = 255  # an object stored as 255 instead of its class index
    save_palette_png(base / "SegmentationClass" / f"{VOC_VAL[1]}.png", binary)
    with pytest.raises(DataError, match=rf"{VOC_VAL[1]}\.png.*binary 0/255"):
        ready(VOCDataModule(root=str(base), batch_size=2, scan_masks=True))


def test_missing_image_names_the_file(tmp_path):
    write_voc(tmp_path)
    missing = tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{VOC_TRAIN[1]}.jpg"
    missing.unlink()
    with pytest.raises(DataError, match=str(missing)):
        ready(VOCDataModule(root=str(tmp_path), batch_size=2))



def test_check_finds_missing_data_before_training(tmp_path):
    """check() (called by src.train before the trainer and its device are set up) lists the splits and
    their files; setup then reuses what it found."""
    absent = VOCDataModule(root=str(tmp_path / "nowhere"), batch_size=2)
    with pytest.raises(DataError, match="nowhere.*not found"):
        absent.check()
    write_voc(tmp_path)
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages" / f"{VOC_VAL[0]}.jpg").unlink()
    with pytest.raises(DataError, match=VOC_VAL[0]):
        VOCDataModule(root=str(tmp_path), batch_size=2).check()


def test_a_gpu_preset_without_its_data_reports_the_data_first(cli, tmp_path):
    """On a machine without the data (and maybe without a GPU) the VOC presets name the missing folder."""
    run = cli("experiment=voc_hung_semi", "logger=csv", f"paths.data_dir={tmp_path / 'data'}")
    assert run.returncode == 2, run.output[-2000:]
    assert "VOCdevkit/VOC2012 not found" in run.stderr and "Expected layout" in run.stderr


# ----------------------------------------------------------------------------------------- Cityscapes
def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    written = write_cityscapes(tmp_path)
    dm = ready(CityscapesDataModule(root=str(tmp_path), batch_size=2, augment=None))
    assert dm.num_classes == 19 and len(dm.class_names) == 19
    assert dm.labeled_ids == ["aachen_000000_000019", "bochum_000000_000313"]
    lut = dict(zip(CITY_LABEL_IDS.tolist(), CITY_TRAIN_IDS.tolist()))
    image, mask = dm.val_set[0]
    expected = np.vectorize(lut.get)(written["frankfurt_000000_000294"])
    assert image.shape == (3, H, W) and np.array_equal(mask.numpy(), expected)
    assert set(mask.unique().tolist()) == {0, 1, 2, 11, 13, 18, 255}
    resized = ready(CityscapesDataModule(root=str(tmp_path), batch_size=2, resize=[16, 32], augment=None))
    x, y = next(iter(resized.train_dataloader()))
    assert x.shape == (2, 3, 16, 32) and y.shape == (2, 16, 32) and resized.shape == (3, 16, 32)


def test_cityscapes_train_ids_given_as_label_ids_fail(tmp_path):
    write_cityscapes(tmp_path)
    path = tmp_path / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_labelIds.png"
    train_ids = np.full((H, W), 255, np.uint8)
    train_ids[:10] = 13
    Image.fromarray(train_ids, mode="L").save(path)
    with pytest.raises(DataError, match=r"frankfurt_000000_000294_gtFine_labelIds\.png.*\[255\]"):
        ready(CityscapesDataModule(root=str(tmp_path), batch_size=2, scan_masks=True))


# ----------------------------------------------------------------------------------------------- Pets
def test_pets_trimaps_become_background_pet_void(tmp_path):
    trimaps = write_pets(tmp_path)
    dm = ready(PetsDataModule(root=str(tmp_path / "oxford-iiit-pet"), batch_size=2, augment=None))
    assert dm.num_classes == 2 and dm.class_names == ("background", "pet")
    assert dm.labeled_ids == sorted(PET_TRAIN, key=PET_TRAIN.index)
    mask = dm.val_set[1][1].numpy()
    tri = trimaps[PET_TEST[1]]
    assert (mask[tri == 1] == 1).all() and (mask[tri == 2] == 0).all() and (mask[tri == 3] == 255).all()
    assert len(ready(PetsDataModule(root=str(tmp_path), batch_size=2)).val_set) == 2  # parent dir works too


def test_pets_binary_mask_fails_naming_the_file(tmp_path):
    write_pets(tmp_path)
    path = tmp_path / "oxford-iiit-pet" / "annotations" / "trimaps" / f"{PET_TRAIN[2]}.png"
    binary = np.zeros((H, W), np.uint8)
    binary[5:20, 5:20] = 255
    Image.fromarray(binary, mode="L").save(path)
    lazy = ready(PetsDataModule(root=str(tmp_path), batch_size=2))
    with pytest.raises(DataError, match=rf"{PET_TRAIN[2]}\.png.*\[0, 255\]"):
        lazy.train_set[2]
    with pytest.raises(DataError, match=rf"{PET_TRAIN[2]}\.png"):
        ready(PetsDataModule(root=str(tmp_path), batch_size=2, scan_masks=True))


def test_whole_images_of_different_sizes_are_padded_in_val_batches(tmp_path):
    write_pets(tmp_path, sizes={PET_TEST[0]: (30, 40), PET_TEST[1]: (36, 28)})
    dm = ready(PetsDataModule(root=str(tmp_path), batch_size=2, val_batch_size=2))
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 36, 40) and y.shape == (2, 36, 40)
    assert (y[0, 30:] == 255).all() and (x[0, :, 30:] == 0).all()
    assert (y[1, :, 28:] == 255).all()


# --------------------------------------------------------------------------------------- missing data
@pytest.mark.parametrize("cls, expect", [(VOCDataModule, "SegmentationClass"),
                                         (CityscapesDataModule, "gtFine_labelIds"),
                                         (PetsDataModule, "trimaps")])
def test_missing_root_names_path_layout_and_fix(tmp_path, cls, expect):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        ready(cls(root=str(root), batch_size=2))
    message = str(info.value)
    assert str(root) in message and expect in message
    assert "dataset.root=" in message and "DATA_DIR" in message


def test_missing_split_list_is_named(tmp_path):
    write_voc(tmp_path)
    listing = tmp_path / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train_aug.txt"
    with pytest.raises(DataError, match=str(listing)):
        ready(VOCDataModule(root=str(tmp_path), aug=True, batch_size=2))


# ------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["voc", "voc_aug", "cityscapes", "pets"])
def test_yamls_compose_and_build(tmp_path, name):
    data = tmp_path / "data"
    root = {"voc": data / "VOCdevkit" / "VOC2012", "voc_aug": data / "VOCdevkit" / "VOC2012",
            "cityscapes": data / "cityscapes", "pets": data / "oxford-iiit-pet"}[name]
    if name.startswith("voc"):
        write_voc(data, aug=name == "voc_aug")
    elif name == "cityscapes":
        write_cityscapes(root)
    else:
        write_pets(data)
    out = tmp_path / "run"
    cfg = compose([f"dataset={name}", f"paths.data_dir={data}", "dataset.batch_size=2", "dataset.num_workers=0",
                   "dataset.labeled_fraction=0.5", "dataset.unlabeled=true", "dataset.scan_masks=true",
                   "dataset.resize=[24,32]"], output_dir=out)
    meta = cfg.dataset.meta
    assert meta.ignore_index == 255 and meta.monitor.metric == "val/mIoU" and meta.monitor.mode == "max"
    assert meta.num_classes == {"voc": 21, "voc_aug": 21, "cityscapes": 19, "pets": 2}[name]
    assert len(meta.shape) == 3 and meta.shape[0] == 3
    assert cfg.dataset.root == str(root)
    dm = build_datamodule(cfg)
    dm.setup()
    assert dm.num_classes == meta.num_classes
    assert (out / "labeled_ids.txt").read_text().split() == dm.labeled_ids
    loaders = dm.train_dataloader()
    assert set(loaders) == {"labeled", "unlabeled"}
    assert all(isinstance(v, ResumableDataLoader) for v in loaders.values())
    x, y = next(iter(loaders["labeled"]))
    assert x.shape[:2] == (2, 3) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= set(range(dm.num_classes)) | {255}
    vx, vy = next(iter(dm.val_dataloader()))
    assert vx.shape[-2:] == (24, 32) and vy.shape[-2:] == (24, 32)
