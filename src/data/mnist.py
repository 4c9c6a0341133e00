"""MNIST and Fashion-MNIST from their IDX files, read from a local folder (torchvision's layout;
nothing is downloaded).

Expected layout (each file either plain or gzipped, ``.gz``)::

    <root>/MNIST/raw/train-images-idx3-ubyte      60,000 x 28 x 28 uint8 (IDX magic 0x00000803)
    <root>/MNIST/raw/train-labels-idx1-ubyte      60,000 uint8 labels 0..9 (IDX magic 0x00000801)
    <root>/MNIST/raw/t10k-images-idx3-ubyte       10,000 test images (the validation split)
    <root>/MNIST/raw/t10k-labels-idx1-ubyte       10,000 test labels

Fashion-MNIST has the same four files under ``<root>/FashionMNIST/raw/``. ``<root>`` is
``dataset.root`` (default ``${paths.data_dir}``, i.e. ``DATA_DIR`` from ``.env``, else ``./data``):
the same root as torchvision's ``MNIST(root)``, so a folder torchvision downloaded into works as is.
``dataset.root`` may also name the ``raw`` folder itself (or a folder holding the four files).

Images are scaled to [-1, 1], shape (1, size, size); ``size`` other than 28 resizes bilinearly (32 for
a DCGAN with power-of-two stages; 28 = 7 * 2**2 works too). The validation set is the test split
(``num_val`` cuts it to a fixed subset).
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from src.data.images import ImageDataModule, UInt8Images
from src.utils.errors import DataError

# IDX type codes (the third byte of the magic number) -> numpy dtypes (big-endian)
IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (plain or .gz): magic 0x0000TTNN (type TT, NN dimensions), NN big-endian uint32
    sizes, then the data. Raises DataError naming the file when it is unreadable, truncated or oversized."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read this IDX file ({type(err).__name__}: {err}); "
                        "replace it with an intact copy") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'none'}; expected "
                        "0x00000801 for labels or 0x00000803 for images); replace it with an intact copy")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes); replace it with an intact copy")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: IDX file {state}: {len(raw)} bytes, expected {expected} for shape {dims}; "
                        "replace it with an intact copy")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


class IDXDataModule(ImageDataModule):
    """MNIST-like datasets: four IDX files under <root>/<folder>/raw/."""

    folder: str = "MNIST"
    channels, native_size = 1, 28
    class_names: list[str] = MNIST_CLASSES

    def __init__(self, root, size: int | None = 28, num_val: int | None = None, **kwargs):
        super().__init__(root, size=size, num_val=num_val, **kwargs)
        self.classes = list(self.class_names)

    def layout(self) -> list[str]:
        return [f"<root>/{self.folder}/raw/{name}[.gz]" for pair in SPLITS.values() for name in pair]

    def candidates(self) -> list[Path]:
        """Folders that may hold the files: torchvision's <root>/<folder>/raw, then <root>/raw, <root>."""
        return [self.root / self.folder / "raw", self.root / "raw", self.root]

    @staticmethod
    def _find(folder: Path, name: str) -> Path | None:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

    def check(self) -> dict[str, Path]:
        """The path of each of the four files (plain preferred over .gz), all from one folder."""
        names = [name for pair in SPLITS.values() for name in pair]
        best: tuple[Path, dict[str, Path]] | None = None
        for folder in self.candidates():
            found = {n: p for n in names if (p := self._find(folder, n)) is not None}
            if len(found) == len(names):
                for path in found.values():
                    if path.stat().st_size == 0:
                        raise DataError(f"{path}: empty file; replace it with an intact copy")
                return found
            if found and (best is None or len(found) > len(best[1])):
                best = (folder, found)
        if best is None:
            raise self.error(f"no {self.folder} IDX files under {self.root}", self.candidates())
        folder, found = best
        missing = ", ".join(f"{n}[.gz]" for n in names if n not in found)
        raise self.error(f"{folder} lacks {missing}", self.candidates())

    def _split(self, found: dict[str, Path], split: str) -> UInt8Images:
        image_file, label_file = (found[n] for n in SPLITS[split])
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise DataError(f"{image_file}: expected uint8 images of shape (N, 28, 28), got "
                            f"{images.dtype} {images.shape}")
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataError(f"{label_file}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
        if len(labels) != len(images):
            raise DataError(f"{label_file}: {len(labels)} labels for the {len(images)} images of {image_file}")
        if len(labels) and int(labels.max()) >= len(self.classes):
            raise DataError(f"{label_file}: label {int(labels.max())} outside 0..{len(self.classes) - 1}")
        x = torch.from_numpy(images.copy()).unsqueeze(1)  # copy: frombuffer arrays are read-only
        return UInt8Images(x, torch.from_numpy(labels.astype(np.int64)), self.size)

    def load(self, found: dict[str, Path]) -> tuple[UInt8Images, UInt8Images]:
        return self._split(found, "train"), self._split(found, "test")


class MNISTDataModule(IDXDataModule):
    name, folder, class_names = "mnist", "MNIST", MNIST_CLASSES


class FashionMNISTDataModule(IDXDataModule):
    name, folder, class_names = "fashion_mnist", "FashionMNIST", FASHION_CLASSES
