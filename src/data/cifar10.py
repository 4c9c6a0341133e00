"""CIFAR-10 from the python pickle batches, read from a local folder (torchvision's layout; nothing is
downloaded, and no md5 check, so any intact copy or a small faithful fixture loads).

Expected layout::

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5   10,000 training images each
    <root>/cifar-10-batches-py/test_batch                      10,000 test images (the validation split)
    <root>/cifar-10-batches-py/batches.meta                    class names (optional)

Each batch is a pickled dict (Python 2, so keys are bytes) with ``b'data'``: uint8 array (N, 3072), each
row 1024 red, 1024 green then 1024 blue values of a 32x32 image in row-major order, and ``b'labels'``:
N ints in 0..9; ``batches.meta`` holds ``b'label_names'``. ``<root>`` is ``dataset.root`` (default
``${paths.data_dir}``, i.e. ``DATA_DIR`` from ``.env``, else ``./data``), the same root as torchvision's
``CIFAR10(root)``; it may also name the ``cifar-10-batches-py`` folder itself.

The pickles are read with an unpickler that only builds numpy arrays and plain containers, so a
tampered file cannot run code. Images are scaled to [-1, 1], shape (3, size, size) (size 32 is native).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from src.data.images import ImageDataModule, UInt8Images
from src.utils.errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# What a CIFAR pickle may reference: numpy's array reconstruction, under its numpy 1 and 2 module names,
# and _codecs.encode, which protocol-2 pickles written by Python 3 use for bytes.
_ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _text(key) -> str:
    return key.decode("latin1") if isinstance(key, bytes) else str(key)


def read_pickle(path: Path) -> dict[str, object]:
    """A CIFAR pickle as a dict with str keys; DataError naming the file when it is not one."""
    try:
        with open(path, "rb") as fh:
            obj = _ArrayUnpickler(fh, encoding="bytes").load()
    except Exception as err:  # truncated, garbage or tampered: all the user can do is replace the file
        raise DataError(f"{path}: not a readable CIFAR-10 pickle ({type(err).__name__}: {err}); "
                        "replace it with an intact copy") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}; replace it with an intact copy")
    return {_text(k): v for k, v in obj.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) of one batch file, validated."""
    batch = read_pickle(path)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise DataError(f"{path}: CIFAR-10 batch without the key(s) {', '.join(repr(k.encode()) for k in missing)} "
                        f"(has {sorted(batch)}); replace it with an intact copy")
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array (N, 3072), got {got}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise DataError(f"{path}: b'labels' must be a list of ints ({err})") from None
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(labels)} labels for {len(data)} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{path}: labels outside 0..{len(CLASSES) - 1}")
    return data.reshape(-1, 3, 32, 32), labels


class CIFAR10DataModule(ImageDataModule):
    name, channels, native_size = "cifar10", 3, 32

    def __init__(self, root, size: int | None = 32, num_val: int | None = None, **kwargs):
        super().__init__(root, size=size, num_val=num_val, **kwargs)
        self.classes = list(CLASSES)

    def layout(self) -> list[str]:
        return [f"<root>/{FOLDER}/{name}" for name in TRAIN_BATCHES + [TEST_BATCH]] + \
               [f"<root>/{FOLDER}/{META}  (optional: class names)"]

    def check(self) -> Path:
        """The folder holding the batches: <root>/cifar-10-batches-py, or <root> itself."""
        candidates = [self.root / FOLDER, self.root]
        needed = TRAIN_BATCHES + [TEST_BATCH]
        for folder in candidates:
            present = [n for n in needed if (folder / n).is_file()]
            if len(present) == len(needed):
                return folder
            if present:
                missing = ", ".join(n for n in needed if n not in present)
                raise self.error(f"{folder} lacks {missing}", candidates)
        raise self.error(f"no CIFAR-10 batches under {self.root}", candidates)

    def _split(self, files: list[Path]) -> UInt8Images:
        parts = [read_batch(f) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return UInt8Images(torch.from_numpy(images), torch.from_numpy(labels), self.size)

    def load(self, folder: Path) -> tuple[UInt8Images, UInt8Images]:
        if (folder / META).is_file():
            names = read_pickle(folder / META).get("label_names")
            if not isinstance(names, list) or len(names) != len(CLASSES):
                raise DataError(f"{folder / META}: expected b'label_names', a list of {len(CLASSES)} names")
            self.classes = [_text(n) for n in names]
        return self._split([folder / n for n in TRAIN_BATCHES]), self._split([folder / TEST_BATCH])
