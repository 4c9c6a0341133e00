"""Oxford-IIIT Pet (Parkhi et al. 2012, "Cats and Dogs", CVPR) as foreground/background segmentation.

Layout (``root`` is the ``oxford-iiit-pet`` directory)::

    images/<Breed>_<n>.jpg
    annotations/trimaps/<Breed>_<n>.png     trimap: 1 pet, 2 background, 3 border (undecided)
    annotations/{trainval,test}.txt         "<Breed>_<n> class species breed_id" per line

Classes: 0 background (trimap 2), 1 pet (trimap 1); the trimap's border region (3) is void (255).
Train on ``trainval`` (3,680 images), validate on ``test`` (3,669). Any other trimap value (e.g. a 0/255
binary mask) fails with a DataError naming the file. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from src.data.segmentation import FileSegmentationDataModule, MaskDecoder, crop_shape, read_id_list

PET_CLASSES = ("background", "pet")

LAYOUT = """  <root> = .../oxford-iiit-pet
    images/<Breed>_<n>.jpg
    annotations/trimaps/<Breed>_<n>.png   (1 pet, 2 background, 3 border)
    annotations/{trainval,test}.txt"""


def trimap_decoder() -> MaskDecoder:
    lut = np.full(256, 255, np.uint8)
    lut[1], lut[2], lut[3] = 1, 0, 255
    valid = np.zeros(256, bool)
    valid[[1, 2, 3]] = True
    return MaskDecoder(lut, valid, num_classes=2, expected="trimap values 1 (pet), 2 (background), 3 (border)")


class PetsDataModule(FileSegmentationDataModule):
    name = "pets"
    layout = LAYOUT
    num_classes = 2
    class_names = PET_CLASSES

    def __init__(self, train_split: str = "trainval", val_split: str = "test", **kwargs):
        super().__init__(train_split=train_split, val_split=val_split, **kwargs)
        self.shape = (3, *crop_shape(self.transform, self.resize, (256, 256)))

    def resolve_root(self) -> Path:
        for candidate in (self.root, self.root / "oxford-iiit-pet"):
            if (candidate / "annotations").is_dir():
                return candidate
        raise self.missing(self.root / "annotations" if self.root.is_dir() else self.root)

    def decoder(self) -> MaskDecoder:
        return trimap_decoder()

    def list_split(self, root: Path, split: str) -> list[tuple[str, Path, Path]]:
        listing = root / "annotations" / f"{split}.txt"
        if not listing.is_file():
            raise self.missing(listing)
        ids = read_id_list(listing)
        return [(i, root / "images" / f"{i}.jpg", root / "annotations" / "trimaps" / f"{i}.png") for i in ids]
