"""PASCAL VOC 2012 segmentation (Everingham et al. 2010, "The PASCAL Visual Object Classes (VOC)
Challenge", IJCV), optionally with the SBD augmented training set (Hariharan et al. 2011, "Semantic
contours from inverse detectors", ICCV) as used by DeepLab and Hung et al. 2018: 10,582 train_aug images.

Layout (``root`` is the VOC2012 directory; a directory holding ``VOCdevkit/VOC2012`` also works)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette PNG, indices 0-20, 255 void
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    # with aug: true (SBD converted to VOC indices, the common "SegmentationClassAug" layout)
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png     grayscale or palette indices 0-20, 255 void
    VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt

Masks stored as RGB colour images (the VOC colour map) are decoded to indices too; any other value fails
with a DataError naming the file. 21 classes (0 background), 255 void. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from src.data.segmentation import FileSegmentationDataModule, MaskDecoder, crop_shape, read_id_list
from src.utils.errors import DataError

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")

LAYOUT = """  <root> = .../VOCdevkit/VOC2012
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png          (palette PNG: indices 0-20, 255 void)
    ImageSets/Segmentation/{train,val,trainval}.txt
    SegmentationClassAug/<id>.png       (only with dataset.aug=true: SBD masks as indices)
    ImageSets/Segmentation/train_aug.txt (only with dataset.aug=true; or set dataset.aug_list)"""


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC colour map (n, 3) uint8: the bits of the class index spread over R, G, B from the top bit."""
    cmap = np.zeros((n, 3), np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for bit in range(7, -1, -1):
            r |= (value & 1) << bit
            g |= ((value >> 1) & 1) << bit
            b |= ((value >> 2) & 1) << bit
            value >>= 3
        cmap[index] = (r, g, b)
    return cmap


class VOCMaskDecoder(MaskDecoder):
    """VOC indices (palette or grayscale PNG); RGB masks in the VOC colour map are mapped to indices."""

    def read_raw(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                if im.mode in ("RGB", "RGBA"):
                    rgb = np.asarray(im.convert("RGB"))
                else:
                    return super().read_raw(path)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: cannot read the mask ({exc})") from exc
        cmap = voc_colormap()
        keys = (cmap[:, 0].astype(np.int64) << 16) | (cmap[:, 1].astype(np.int64) << 8) | cmap[:, 2]
        known = {int(k): i for i, k in enumerate(keys) if i < self.num_classes or i == 255}
        pixels = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
        colours, inverse = np.unique(pixels, return_inverse=True)
        unknown = [c for c in colours.tolist() if c not in known]
        if unknown:
            shown = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
            raise DataError(f"{path}: RGB mask with colours {shown} outside the VOC colour map; expected "
                            f"{self.expected} (palette PNG)")
        return np.array([known[c] for c in colours.tolist()], np.uint8)[inverse].reshape(pixels.shape)


class VOCDataModule(FileSegmentationDataModule):
    """VOC 2012 segmentation; ``aug: true`` trains on SBD's train_aug list (validation stays VOC val).

    Args:
        aug: use SegmentationClassAug masks and the train_aug list for the training split.
        aug_list: path of the train_aug id list (default ``ImageSets/Segmentation/train_aug.txt``).
        Other arguments: :class:`src.data.segmentation.FileSegmentationDataModule`.
    """

    name = "voc"
    layout = LAYOUT
    num_classes = 21
    class_names = VOC_CLASSES

    def __init__(self, aug: bool = False, aug_list: str | None = None, **kwargs):
        if kwargs.get("train_split") is None:
            kwargs["train_split"] = "train_aug" if aug else "train"
        super().__init__(**kwargs)
        self.aug, self.aug_list = bool(aug), aug_list
        self.shape = (3, *crop_shape(self.transform, self.resize, (321, 321)))

    def resolve_root(self) -> Path:
        for candidate in (self.root, self.root / "VOC2012", self.root / "VOCdevkit" / "VOC2012"):
            if (candidate / "JPEGImages").is_dir():
                return candidate
        raise self.missing(self.root / "JPEGImages" if self.root.is_dir() else self.root)

    def decoder(self) -> VOCMaskDecoder:
        return VOCMaskDecoder.identity(self.num_classes, binary_check=True,
                                       expected="VOC class indices 0-20 and 255 (void)")

    def list_split(self, root: Path, split: str) -> list[tuple[str, Path, Path]]:
        sets = root / "ImageSets" / "Segmentation"
        if split == "train_aug":
            listing = Path(self.aug_list) if self.aug_list else sets / "train_aug.txt"
            masks = root / "SegmentationClassAug"
        else:
            listing, masks = sets / f"{split}.txt", root / "SegmentationClass"
        if not listing.is_file():
            raise self.missing(listing)
        if not masks.is_dir():
            raise self.missing(masks)
        ids = read_id_list(listing)
        if split == "train_aug" and (sets / f"{self.val_split}.txt").is_file():
            leak = sorted(set(ids) & set(read_id_list(sets / f"{self.val_split}.txt")))
            if leak:
                raise DataError(f"{listing}: {len(leak)} id(s) of the {self.val_split} split (e.g. {leak[0]}) are in "
                                "the training list; remove them (the usual train_aug list has 10,582 ids, none "
                                "from VOC val)")
        return [(i, root / "JPEGImages" / f"{i}.jpg", masks / f"{i}.png") for i in ids]
