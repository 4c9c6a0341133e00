"""Shared machinery of the semantic-segmentation data modules.

Batch format (every segmentation data module): ``(image, mask)`` with image float32 (B, 3, H, W),
normalised with the module's ``mean`` / ``std`` (per channel, in [0, 1] pixel units), and mask int64
(B, H, W) holding class ids 0..K-1 and ``ignore_index`` (255) for void pixels.

Semi-supervised options (Hung et al. 2018, arXiv 1802.07934):

* ``labeled_fraction`` in (0, 1]: the labeled subset is the first ``round(fraction * N)`` ids of a
  permutation of the training set drawn from the run seed, so for one seed the 1/8 subset lies inside the
  1/4 subset and so on. Its ids are written to ``<save_dir>/labeled_ids.txt`` (one per line) in setup().
* ``unlabeled``: when true and the rest of the training set (the unlabeled pool) is non-empty,
  ``train_dataloader()`` returns ``{"labeled": loader, "unlabeled": loader}``. Both loaders draw the same
  number of batches per epoch, max(N_l, N_u) // batch_size (the smaller set is cycled: each of its samples
  occurs about max(N_l, N_u) / N_small times per epoch), so Lightning's combination modes agree and both
  resume exactly. Each is a ResumableDataLoader over its own seeded ResumableBatchSampler (the unlabeled
  one at seed + UNLABELED_SEED_OFFSET). The unlabeled loader still yields the true masks, for
  diagnostics only (e.g. pseudo-label accuracy); never train on them.

Extra labeled data: a subclass may return a source from :meth:`SegmentationDataModule.build_extra_labeled_source`
(e.g. scenes composed from generated digits, src/data/scenes.py); the training source is then the original one
followed by the extras (:class:`ConcatSource`), and every extra item joins the labeled subset. The labeled
subset of the original training set (``labeled_fraction``) and the unlabeled pool are exactly what they are
without extras: extras are never unlabeled.

Sources: a :class:`SegmentationSource` gives the raw samples of one split (ids and ``load(i)``);
:class:`TensorSource` holds them in memory (generated data), :class:`FileSource` reads image + mask files
and decodes masks with a :class:`MaskDecoder`, which rejects bad masks with a DataError naming the file;
:class:`ConcatSource` chains sources.
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from src.data.base import ResumableDataModule, save_labeled_ids
from src.data.sampling import ResumableBatchSampler
from src.data.transforms import IGNORE_INDEX, JointTransform, build_transform, resize_pair, sample_generator
from src.utils.errors import DataError
from src.utils.schema import require

#: added to the run seed for the unlabeled loader's order, so it differs from the labeled loader's
UNLABELED_SEED_OFFSET = 1_000_003
#: salt of the labeled-subset permutation (independent of the data order drawn from the same seed)
LABELED_SPLIT_SALT = 0x5E6
#: ImageNet statistics (RGB, [0, 1] units), the usual normalisation for ImageNet-pretrained backbones
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------------------------- sources
class SegmentationSource:
    """The raw samples of one split. ``load(i)`` returns (image float32 (3, H, W) in [0, 1],
    mask int64 (H, W) with class ids and 255)."""

    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def scan(self) -> None:
        """Check every mask now (a DataError names the first bad file). Default: nothing to check."""


class TensorSource(SegmentationSource):
    """Samples held in memory: images uint8 (N, 3, H, W) or float in [0, 1]; masks (N, H, W)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, ids: Sequence[str]):
        if not (len(images) == len(masks) == len(ids)):
            raise ValueError(f"{len(images)} images, {len(masks)} masks, {len(ids)} ids")
        self.images, self.masks, self.ids = images, masks, list(ids)

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i]
        image = image.float() / 255 if image.dtype == torch.uint8 else image.float()
        return image, self.masks[i].long()


class ConcatSource(SegmentationSource):
    """The samples of `sources` one after the other (ids concatenated; index i of the whole maps to the
    source that holds it)."""

    def __init__(self, sources: Sequence[SegmentationSource]):
        self.sources = list(sources)
        self.ids = [i for source in self.sources for i in source.ids]
        self.offsets = np.cumsum([0] + [len(source) for source in self.sources])

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self.ids):
            raise IndexError(i)
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.sources[k].load(i - int(self.offsets[k]))

    def scan(self) -> None:
        for source in self.sources:
            source.scan()


class MaskDecoder:
    """Maps the stored values of a mask file to class ids through a 256-entry table and rejects masks with
    values outside the table's domain (e.g. 0/255 binary masks, labelIds where trainIds are expected).

    Args:
        lut: 256 class ids (0..K-1 or 255), one per stored value.
        valid: 256 booleans, which stored values may occur.
        num_classes: K.
        binary_check: also reject masks that hold only {0, 255} with 255 covering more than
            `binary_void_fraction` of the pixels when K > 2 (a 0/255 object mask, not a void band).
    """

    binary_void_fraction = 0.1

    def __init__(self, lut: np.ndarray, valid: np.ndarray, num_classes: int, binary_check: bool = False,
                 expected: str = ""):
        self.lut, self.valid = np.asarray(lut, dtype=np.uint8), np.asarray(valid, dtype=bool)
        self.num_classes, self.binary_check, self.expected = num_classes, binary_check, expected

    @classmethod
    def identity(cls, num_classes: int, **kwargs) -> "MaskDecoder":
        """Stored values are the class ids 0..K-1, and 255 for void (VOC)."""
        lut = np.full(256, IGNORE_INDEX, np.uint8)
        lut[:num_classes] = np.arange(num_classes)
        valid = np.zeros(256, bool)
        valid[:num_classes] = valid[IGNORE_INDEX] = True
        kwargs.setdefault("expected", f"class ids 0..{num_classes - 1} and {IGNORE_INDEX} (void)")
        return cls(lut, valid, num_classes, **kwargs)

    def read_raw(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                if im.mode not in ("P", "L", "I", "I;16"):
                    raise DataError(f"{path}: a mask must be a single-channel PNG of {self.expected} "
                                    f"(palette 'P' or grayscale 'L'); got mode {im.mode!r}")
                arr = np.asarray(im)
        except DataError:
            raise
        except Exception as exc:  # unreadable / truncated file
            raise DataError(f"{path}: cannot read the mask ({exc})") from exc
        return arr

    def decode(self, arr: np.ndarray, path: Path | str) -> np.ndarray:
        if arr.dtype != np.uint8:
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise DataError(f"{path}: mask values {int(arr.min())}..{int(arr.max())} outside 0..255; "
                                f"expected {self.expected}")
            arr = arr.astype(np.uint8)
        bad = ~self.valid[arr]
        if bad.any():
            values = sorted(set(np.unique(arr[bad]).tolist()))
            raise DataError(f"{path}: bad mask values {values[:10]}{' ...' if len(values) > 10 else ''}; "
                            f"expected {self.expected}")
        if self.binary_check and self.num_classes > 2:
            void = arr == IGNORE_INDEX
            if void.mean() > self.binary_void_fraction and not (arr[~void] != 0).any():
                raise DataError(f"{path}: the mask holds only 0 and 255 with {void.mean():.0%} of the pixels at "
                                f"255: it looks like a binary 0/255 mask, not {self.expected} for "
                                f"{self.num_classes} classes")
        return self.lut[arr]

    def __call__(self, path: Path) -> np.ndarray:
        return self.decode(self.read_raw(path), path)


def read_image(path: Path) -> torch.Tensor:
    """An RGB image file as float32 (3, H, W) in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise DataError(f"{path}: cannot read the image ({exc})") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


class FileSource(SegmentationSource):
    """Samples read from files: ``items`` are (id, image path, mask path); ``decoder`` maps a mask file to
    class ids (and raises a DataError naming a bad file); ``resize`` (h, w) resizes both, or None."""

    def __init__(self, items: Sequence[tuple[str, Path, Path]], decoder: Callable[[Path], np.ndarray],
                 resize: Sequence[int] | None = None):
        self.items = list(items)
        self.ids = [i for i, _, _ in self.items]
        self.decoder, self.resize = decoder, tuple(int(s) for s in resize) if resize is not None else None

    def load(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, image_path, mask_path = self.items[i]
        image = read_image(image_path)
        mask = torch.from_numpy(self.decoder(mask_path).astype(np.int64))
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise DataError(f"{mask_path}: mask size {tuple(mask.shape)} differs from its image {image_path} "
                            f"{tuple(image.shape[-2:])}")
        if self.resize is not None:
            image, mask = resize_pair(image, mask, self.resize)
        return image, mask

    def scan(self) -> None:
        for _, _, mask_path in self.items:
            self.decoder(mask_path)


def read_id_list(path: Path) -> list[str]:
    """Ids listed one per line. Blank lines are skipped; of each line only the first field counts, and of
    a path (DeepLab-style lists: ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``) only its stem."""
    with open(path) as fh:
        fields = [line.split()[0] for line in fh if line.strip() and not line.lstrip().startswith("#")]
    return [Path(f).stem if "/" in f else f for f in fields]


def crop_shape(transform: JointTransform | None, resize: Sequence[int] | None,
               default: Sequence[int]) -> tuple[int, int]:
    """(h, w) of training samples: the crop if any, else the resize if any, else `default`."""
    if transform is not None and transform.crop is not None:
        return tuple(transform.crop)
    return tuple(int(s) for s in (resize if resize is not None else default))


def missing_data(name: str, path: Path, layout: str, key: str = "dataset.root") -> DataError:
    """The DataError of a dataset that is not where the config says: the path, the layout, the fix."""
    return DataError(
        f"{name}: {path} not found. Expected layout:\n{layout.rstrip()}\n"
        f"Point to it with {key}=/path/to/it on the command line, or set DATA_DIR in .env (the default "
        f"root is under ${{paths.data_dir}} = $DATA_DIR, else ./data); nothing is downloaded."
    )


# --------------------------------------------------------------------------------------------- dataset
class SegmentationDataset(Dataset):
    """Samples `indices` of a source, normalised and (optionally) augmented.

    Keys are an index or ``(epoch, index)`` (what :class:`EpochBatchSampler` yields); the augmentation of
    a sample is seeded by (seed, stream, epoch, index), never by the global RNG. With ``length`` larger
    than ``n = len(indices)`` the view cycles: position p reads ``indices[perm[p % n]]`` with ``perm`` drawn
    from (seed, stream, epoch, p // n), so every sample occurs floor(length / n) or ceil(length / n) times
    per epoch (the sampler shuffles the positions) and the extra occurrences move between epochs.
    """

    def __init__(self, source: SegmentationSource, indices: Sequence[int], mean: Sequence[float],
                 std: Sequence[float], transform: JointTransform | None = None, seed: int = 0, stream: int = 0,
                 length: int | None = None):
        self.source, self.indices = source, torch.as_tensor(list(indices), dtype=torch.long)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.transform, self.seed, self.stream = transform, int(seed), int(stream)
        self.length = len(self.indices) if length is None else int(length)
        self._perms: dict[tuple[int, int], torch.Tensor] = {}

    def with_length(self, length: int) -> "SegmentationDataset":
        return SegmentationDataset(self.source, self.indices.tolist(), self.mean.flatten().tolist(),
                                   self.std.flatten().tolist(), self.transform, self.seed, self.stream, length)

    @property
    def ids(self) -> list[str]:
        return [self.source.ids[i] for i in self.indices.tolist()]

    def __len__(self) -> int:
        return self.length

    def _source_index(self, epoch: int, position: int) -> int:
        n = len(self.indices)
        if self.length <= n:
            return int(self.indices[position])
        # a cycled view: pass c over the small set uses a permutation drawn from (seed, stream, epoch, c),
        # so which samples fill the last, partial pass changes from epoch to epoch
        cycle = position // n
        perm = self._perms.get((epoch, cycle))
        if perm is None:
            if len(self._perms) > 64:
                self._perms.clear()
            perm = torch.randperm(n, generator=sample_generator(self.seed, self.stream, 0x6379, epoch, cycle))
            self._perms[(epoch, cycle)] = perm
        return int(self.indices[perm[position % n]])

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = key if isinstance(key, (tuple, list)) else (0, key)
        if not 0 <= position < self.length:
            raise IndexError(position)
        image, mask = self.source.load(self._source_index(epoch, position))
        image = (image - self.mean) / self.std
        if self.transform is not None:
            image, mask = self.transform(image, mask, sample_generator(self.seed, self.stream, epoch, position))
        return image.contiguous(), mask.contiguous()


class EpochBatchSampler(ResumableBatchSampler):
    """A :class:`ResumableBatchSampler` whose batches are ``[(epoch, index), ...]``, so that the dataset
    can seed each sample's augmentation by the epoch too (in any worker process)."""

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in super().__iter__():
            yield [(self.epoch, i) for i in batch]


class SegmentationCollate:
    """Stacks (image, mask) pairs into a tuple; pairs of different sizes (e.g. whole VOC images at
    validation) are padded bottom/right to the largest, images with 0 (the mean) and masks with 255."""

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = ignore_index

    def __call__(self, batch: list) -> Any:
        if not batch or not isinstance(batch[0], (tuple, list)) or len(batch[0]) != 2:
            return default_collate(batch)
        images, masks = zip(*batch)
        h = max(m.shape[-2] for m in masks)
        w = max(m.shape[-1] for m in masks)
        if all(tuple(m.shape[-2:]) == (h, w) for m in masks):
            return torch.stack(images), torch.stack(masks)
        x = images[0].new_zeros((len(images), images[0].shape[0], h, w))
        y = masks[0].new_full((len(masks), h, w), self.ignore_index)
        for k, (image, mask) in enumerate(zip(images, masks)):
            x[k, :, : image.shape[-2], : image.shape[-1]] = image
            y[k, : mask.shape[-2], : mask.shape[-1]] = mask
        return x, y


def labeled_count(num: int, fraction: float) -> int:
    """The size of the labeled subset of `num` training samples: round(fraction * num), at least 1."""
    return min(num, max(1, round(fraction * num)))


def labeled_split(num: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(labeled, unlabeled) sorted indices: the first round(fraction * num) (at least 1) of a permutation
    drawn from `seed`. Nested across fractions for one seed."""
    order = torch.randperm(num, generator=sample_generator(seed, LABELED_SPLIT_SALT)).tolist()
    k = labeled_count(num, fraction)
    return sorted(order[:k]), sorted(order[k:])


# ---------------------------------------------------------------------------------------- data module
class SegmentationDataModule(ResumableDataModule):
    """Base of the segmentation data modules; subclasses implement :meth:`build_sources`.

    Attributes after __init__: ``num_classes``, ``class_names``, ``ignore_index`` (255), ``mean``, ``std``
    (tuples of 3 floats, [0, 1] units; subclasses may set them in build_sources), ``shape`` (3, H, W).
    After setup(): ``train_set`` (the labeled subset, plus every extra labeled sample when
    :meth:`build_extra_labeled_source` gives some), ``unlabeled_set`` (None when empty), ``val_set``,
    ``test_set`` (None unless :meth:`build_test_source` gives one), ``labeled_ids``, ``unlabeled_ids``.

    Args:
        labeled_fraction: fraction of the training set that is labeled, in (0, 1].
        unlabeled: also return a loader over the unlabeled pool (see the module docstring).
        save_dir: where to write ``labeled_ids.txt`` (the run's output directory); None: nowhere.
        augment: ``{scale: [lo, hi], crop: N | [h, w], flip: bool}`` for training samples, or None.
        scan_masks: check every mask file in setup() (bad masks fail before training); masks are also
            checked whenever they are read.
        mean, std: normalisation; None: the subclass's default.
    """

    ignore_index: int = IGNORE_INDEX
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    default_mean: Sequence[float] = IMAGENET_MEAN
    default_std: Sequence[float] = IMAGENET_STD

    def __init__(self, labeled_fraction: float = 1.0, unlabeled: bool = False, save_dir: str | None = None,
                 augment: Mapping[str, Any] | None = None, scan_masks: bool = False,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        fraction = labeled_fraction
        if isinstance(fraction, str):  # "1/8" as well as 0.125
            try:
                fraction = float(Fraction(fraction.strip()))
            except (ValueError, ZeroDivisionError):
                pass
        require(isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 1,
                "dataset.labeled_fraction", f"expected a number in (0, 1] (e.g. 0.125 or '1/8'), got {fraction!r}")
        self.labeled_fraction, self.unlabeled = float(fraction), bool(unlabeled)
        self.save_dir = None if save_dir is None else str(save_dir)
        self.transform = build_transform(augment, IGNORE_INDEX)
        self.scan_masks = bool(scan_masks)
        self.mean = tuple(float(m) for m in (mean if mean is not None else self.default_mean))
        self.std = tuple(float(s) for s in (std if std is not None else self.default_std))
        require(len(self.mean) == 3 and len(self.std) == 3 and min(self.std) > 0, "dataset.mean/std",
                "expected 3 means and 3 positive stds (RGB, [0, 1] units)")
        self.collate_fn = SegmentationCollate(IGNORE_INDEX)
        self.train_batch_sampler_cls = EpochBatchSampler
        self.unlabeled_set: SegmentationDataset | None = None
        self.labeled_ids: list[str] = []
        self.unlabeled_ids: list[str] = []

    # subclasses ------------------------------------------------------------------------------------
    def build_sources(self) -> tuple[SegmentationSource, SegmentationSource]:
        """(train source, val source); may also set self.mean / self.std."""
        raise NotImplementedError

    def build_test_source(self) -> SegmentationSource | None:
        """The test source (for reporting only; settings are chosen on val), or None: no test split."""
        return None

    def build_extra_labeled_source(self) -> SegmentationSource | None:
        """Extra labeled training samples (e.g. synthesised), or None: none. Called in setup() after
        :meth:`build_sources`; every sample it gives is added to the labeled subset (never to the unlabeled
        pool), after the labeled subset of the original training set has been drawn."""
        return None

    # setup -----------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_src, val_src = self.build_sources()
        if len(train_src) == 0 or len(val_src) == 0:
            raise DataError(f"{type(self).__name__}: empty split ({len(train_src)} train, {len(val_src)} val)")
        if self.scan_masks:
            train_src.scan()
            val_src.scan()
        labeled, unlabeled = labeled_split(len(train_src), self.labeled_fraction, self.seed)
        extra = self.build_extra_labeled_source()
        if extra is not None and len(extra) > 0:
            if self.scan_masks:
                extra.scan()
            num_real = len(train_src)
            train_src = ConcatSource([train_src, extra])
            labeled = labeled + list(range(num_real, num_real + len(extra)))
        common = dict(mean=self.mean, std=self.std, seed=self.seed)
        self.train_set = SegmentationDataset(train_src, labeled, transform=self.transform, stream=0, **common)
        self.unlabeled_set = (SegmentationDataset(train_src, unlabeled, transform=self.transform, stream=1, **common)
                              if unlabeled else None)
        self.val_set = SegmentationDataset(val_src, range(len(val_src)), transform=None, stream=2, **common)
        test_src = self.build_test_source()
        self.test_set = (None if test_src is None else
                         SegmentationDataset(test_src, range(len(test_src)), transform=None, stream=3, **common))
        self.labeled_ids = [train_src.ids[i] for i in labeled]
        self.unlabeled_ids = [train_src.ids[i] for i in unlabeled]
        self._save_ids()

    def _save_ids(self) -> None:
        save_labeled_ids(self.save_dir, self.labeled_ids, self._rank()[0])

    # loaders ---------------------------------------------------------------------------------------
    def train_dataloader(self):
        if not self.unlabeled or self.unlabeled_set is None:
            return self._train_loader(self.train_set)
        # both views as long as the larger set (and at least one batch per process), the smaller cycled
        length = max(len(self.train_set), len(self.unlabeled_set), self.batch_size * self._rank()[1])
        return {"labeled": self._train_loader(self.train_set.with_length(length)),
                "unlabeled": self._train_loader(self.unlabeled_set.with_length(length),
                                                seed_offset=UNLABELED_SEED_OFFSET)}


class FileSegmentationDataModule(SegmentationDataModule):
    """Base of the data modules that read a folder of image + mask files from ``root``.

    Subclasses set ``name`` and ``layout`` (shown when data is missing), and implement
    :meth:`resolve_root`, :meth:`list_split` (split -> (id, image path, mask path) items) and
    :meth:`decoder`. Every listed file must exist (checked in setup, without reading them); with
    ``scan_masks`` every mask is also decoded in setup, otherwise each is checked when read.

    Args:
        root: the dataset directory (see ``layout``).
        train_split, val_split: split names.
        resize: (h, w) to resize every image and mask to on reading (before augmentation), or None.
    """

    name = "dataset"
    layout = ""

    def __init__(self, root: str | os.PathLike = "", train_split: str = "train", val_split: str = "val",
                 resize: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(os.path.expanduser(str(root)))
        self.train_split, self.val_split = str(train_split), str(val_split)
        if resize is not None:
            resize = [int(s) for s in resize]
            require(len(resize) == 2 and min(resize) >= 1, "dataset.resize", f"expected [h, w], got {resize}")
        self.resize = resize
        self._sources: tuple[SegmentationSource, SegmentationSource] | None = None  # found by check()

    def missing(self, path: Path) -> DataError:
        return missing_data(self.name, path, self.layout)

    def resolve_root(self) -> Path:
        """The directory the layout is relative to (may look inside `root`); DataError when absent."""
        if not self.root.is_dir():
            raise self.missing(self.root)
        return self.root

    def list_split(self, root: Path, split: str) -> list[tuple[str, Path, Path]]:
        raise NotImplementedError

    def decoder(self) -> Callable[[Path], np.ndarray]:
        raise NotImplementedError

    def _checked_items(self, root: Path, split: str) -> list[tuple[str, Path, Path]]:
        items = self.list_split(root, split)
        if not items:
            raise DataError(f"{self.name}: split {split!r} under {root} lists no samples. Expected layout:\n"
                            f"{self.layout.rstrip()}")
        absent = [p for _, image, mask in items for p in (image, mask) if not p.is_file()]
        if absent:
            raise DataError(f"{self.name}: {len(absent)} file(s) of split {split!r} are missing, e.g. {absent[0]}. "
                            f"Expected layout:\n{self.layout.rstrip()}")
        return items

    def build_sources(self) -> tuple[SegmentationSource, SegmentationSource]:
        if self._sources is not None:
            return self._sources
        root = self.resolve_root()
        decoder = self.decoder()
        train = FileSource(self._checked_items(root, self.train_split), decoder, self.resize)
        val = FileSource(self._checked_items(root, self.val_split), decoder, self.resize)
        self._sources = (train, val)
        return self._sources

    def check(self) -> None:
        """Missing or incomplete data fails here, before the trainer (and its device) is set up: the root,
        the split lists and every listed file (not read)."""
        self.build_sources()
