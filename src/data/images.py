"""What the real image datasets share: a data module that reads a local root (never downloads),
checks the on-disk layout before training, and serves (C, H, W) images in [-1, 1] with int64 labels.

Each dataset module (``mnist.py``, ``cifar10.py``, ``imagenet.py``) documents its own layout and
implements :meth:`ImageDataModule.check` (find the files, or raise :class:`DataError` naming the path
looked at, the expected layout and how to point at the data) and :meth:`ImageDataModule.load`.

The validation set is the dataset's test split, optionally cut to a fixed subset of ``num_val`` images
(chosen by a seed of its own, the same for every run).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from src.data.base import ResumableDataModule
from src.utils.errors import DataError
from src.utils.schema import require

SPLIT_SEED = 2024  # the fixed validation subset does not depend on the run's seed

HOW_TO_POINT = ("Point to the data with dataset.root=/path/to/dir on the command line, or move every "
                "dataset at once with DATA_DIR=/path/to/data in .env (dataset.root defaults to {default}; "
                "paths.data_dir is DATA_DIR, else <project>/data). Nothing is downloaded at run time.")


def layout_error(what: str, problem: str, layout: Sequence[str], default_root: str,
                 tried: Iterable[Path] = ()) -> DataError:
    """A DataError that says what is wrong, where we looked, the expected layout and how to fix it."""
    lines = [f"{what}: {problem}"]
    tried = list(tried)
    if tried:
        lines.append("  looked in: " + ", ".join(str(p) for p in tried))
    lines.append("  expected layout:")
    lines += [f"    {entry}" for entry in layout]
    lines.append("  " + HOW_TO_POINT.format(default=default_root))
    return DataError("\n".join(lines))


def to_model_range(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) in 0..255 -> float32 (N, C, size, size) in [-1, 1]."""
    x = images.float().div_(127.5).sub_(1.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp_(-1, 1)
    return x


class UInt8Images(Dataset):
    """Images held in memory as uint8 (N, C, H, W), scaled (and resized) a batch at a time on access:
    a quarter of the memory of float32, and the resize never re-quantises."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.size = images, labels.long(), int(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_model_range(self.images[index: index + 1], self.size)[0], self.labels[index]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return list(zip(to_model_range(self.images[idx], self.size).unbind(0), self.labels[idx].unbind(0)))


def fixed_subset(dataset: Dataset, num: int | None) -> Dataset:
    """The first `num` items of a permutation seeded by SPLIT_SEED (all items when `num` is None or
    at least the dataset's length)."""
    if num is None or num >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(SPLIT_SEED))
    return Subset(dataset, order[:num].sort().values.tolist())


class ImageDataModule(ResumableDataModule):
    """Base of the on-disk image datasets. Subclasses set ``name``, ``channels``, ``native_size``,
    ``default_root`` (how the yaml sets ``root``, for error messages) and implement ``check``/``load``."""

    name: str = "images"
    channels: int = 3
    native_size: int | None = None
    default_root: str = "${paths.data_dir}"

    def __init__(self, root: str | os.PathLike, size: int | None = None, num_val: int | None = None, **kwargs):
        super().__init__(**kwargs)
        require(root is not None and str(root) != "", "dataset.root", "must name the folder holding the data")
        size = size if size is not None else self.native_size
        require(isinstance(size, int) and size >= 1, "dataset.size", f"must be an integer >= 1, got {size!r}")
        require(num_val is None or (isinstance(num_val, int) and num_val >= 1), "dataset.num_val",
                f"must be null (the whole test split) or an integer >= 1, got {num_val!r}")
        self.root = Path(os.path.expanduser(str(root)))
        self.size, self.num_val = size, num_val
        self.shape = (self.channels, size, size)
        self.classes: list[str] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def error(self, problem: str, tried: Iterable[Path] = ()) -> DataError:
        return layout_error(self.name, problem, self.layout(), self.default_root, tried)

    def layout(self) -> list[str]:
        """The expected files and folders, one per line, relative to <root>."""
        raise NotImplementedError

    def check(self):
        """Verify the layout under ``self.root`` without reading it all; return what ``load`` needs.
        Raises DataError (path, expected layout, how to set the root) when anything is missing."""
        raise NotImplementedError

    def load(self, found) -> tuple[Dataset, Dataset]:
        """(train, test) datasets of (image in [-1, 1] (C, size, size), label) pairs; DataError on a
        corrupt file, naming it."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, test = self.load(self.check())
        self.train_set, self.val_set = train, fixed_subset(test, self.num_val)
