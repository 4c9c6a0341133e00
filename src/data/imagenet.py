"""ImageNet (or any dataset in the same shape) as image folders, one folder per class, read from a
local folder with torchvision's ImageFolder (nothing is downloaded).

Expected layout::

    <root>/train/<class>/<image>.JPEG     e.g. train/n01440764/n01440764_10026.JPEG
    <root>/val/<class>/<image>.JPEG       the validation split, the same class folder names

Any image format PIL reads (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp) works. The classes
are the folder names under ``train/``, sorted (label i = the i-th); ``val/`` may hold all of them or a
subset, never others. The official ILSVRC2012 validation archive unpacks flat (50,000 files in one
folder): sort it into class folders first (e.g. with the devkit's ground truth). ``<root>`` is
``dataset.root`` (default ``${paths.data_dir}/imagenet``, i.e. ``DATA_DIR`` from ``.env``, else
``./data/imagenet``).

Images are decoded lazily (use ``num_workers``), converted to RGB, resized so the short side is
``size`` and center-cropped to size x size, then scaled to [-1, 1]: shape (3, size, size). An image
that cannot be decoded raises DataError naming the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from src.data.images import ImageDataModule
from src.utils.errors import DataError

SPLITS = ("train", "val")


class UnreadableImage(DataError):
    """An image file that cannot be decoded. Raised in a DataLoader worker, torch re-raises it in the
    main process with the worker's traceback as the message: keep only ours (src.run prints it)."""

    def __init__(self, message: str):
        marker = f"{type(self).__name__}: "
        if "Original Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB; DataError naming the file when it cannot be decoded."""
    try:
        with open(path, "rb") as fh:
            image = Image.open(fh)
            return image.convert("RGB")  # convert() forces the full decode while the file is open
    except Exception as err:  # PIL raises several types for truncated or garbage files
        raise UnreadableImage(f"{path}: cannot decode this image ({type(err).__name__}: {err}); "
                        "replace or delete it") from None


def is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


class ClassFolder(ImageFolder):
    """An ImageFolder whose classes are given (those of the training split), so val labels line up
    with train labels even when val lacks some classes."""

    def __init__(self, root: str | os.PathLike, classes: list[str], **kwargs):
        self._given = list(classes)
        super().__init__(root, **kwargs)

    def find_classes(self, directory):
        return self._given, {name: i for i, name in enumerate(self._given)}


def class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


class ImageNetDataModule(ImageDataModule):
    name, channels, native_size = "imagenet", 3, None
    default_root = "${paths.data_dir}/imagenet"

    def __init__(self, root, size: int | None = 64, num_val: int | None = None, **kwargs):
        super().__init__(root, size=size, num_val=num_val, **kwargs)

    def layout(self) -> list[str]:
        return ["<root>/train/<class>/<image>.JPEG   (one folder per class, any PIL-readable image)",
                "<root>/val/<class>/<image>.JPEG     (the same class folder names, or a subset)"]

    def transform(self) -> transforms.Compose:
        return transforms.Compose([
            transforms.Resize(self.size, antialias=True),
            transforms.CenterCrop(self.size),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),  # [0, 1] -> [-1, 1]
        ])

    def check(self) -> list[str]:
        """The class names (sorted folder names under train/), after checking both splits' layout."""
        if not self.root.is_dir():
            raise self.error(f"{self.root} does not exist", [self.root])
        for split in SPLITS:
            folder = self.root / split
            if not folder.is_dir():
                raise self.error(f"{folder} does not exist", [self.root])
            if not class_dirs(folder):
                flat = any(is_image(e.name) for e in os.scandir(folder) if e.is_file())
                hint = (" (it holds images directly: sort them into one folder per class, e.g. with the "
                        "ILSVRC2012 devkit's ground truth)") if flat else ""
                raise self.error(f"{folder} has no class folders{hint}", [folder])
        classes = class_dirs(self.root / "train")
        extra = sorted(set(class_dirs(self.root / "val")) - set(classes))
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            raise self.error(f"{self.root / 'val'} has class folders that train/ lacks: {shown}", [self.root])
        return classes

    def _split(self, split: str, classes: list[str], allow_empty: bool) -> ClassFolder:
        try:
            return ClassFolder(self.root / split, classes, transform=self.transform(), loader=load_rgb,
                               allow_empty=allow_empty)
        except FileNotFoundError as err:  # a class folder without any image file
            raise self.error(f"{self.root / split}: {err}", [self.root / split]) from None

    def load(self, classes: list[str]) -> tuple[ClassFolder, ClassFolder]:
        self.classes = classes
        train = self._split("train", classes, allow_empty=False)
        val = self._split("val", classes, allow_empty=True)
        if len(val) == 0:
            raise self.error(f"{self.root / 'val'} holds no images", [self.root / "val"])
        load_rgb(train.samples[0][0])  # a first decode now: an unreadable tree fails before training
        return train, val
