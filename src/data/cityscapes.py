"""Cityscapes fine annotations (Cordts et al. 2016, "The Cityscapes Dataset for Semantic Urban Scene
Understanding", CVPR): the 19 evaluation classes (trainIds 0-18), everything else void (255).

Layout (``root`` holds both folders)::

    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The ``*_gtFine_labelIds.png`` masks hold label ids 0-33, mapped to trainIds by the official table
(cityscapesScripts' ``labels.py``); any other value (e.g. 255 in a ``*_labelTrainIds.png`` given by
mistake) fails with a DataError naming the file. Hung et al. 2018 train and evaluate at 512x1024
(``resize: [512, 1024]``). Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from src.data.segmentation import FileSegmentationDataModule, MaskDecoder, crop_shape

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")

#: labelId -> trainId for the 19 evaluated classes; the other label ids 0-33 map to 255 (void)
LABEL_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                     26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
NUM_LABEL_IDS = 34  # 0 unlabeled .. 33 bicycle (license plate, -1, is never drawn into labelIds images)

LAYOUT = """  <root>
    leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   (label ids 0-33)"""


def label_id_decoder() -> MaskDecoder:
    lut = np.full(256, 255, np.uint8)
    for label_id, train_id in LABEL_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    valid = np.zeros(256, bool)
    valid[:NUM_LABEL_IDS] = True
    return MaskDecoder(lut, valid, num_classes=len(CITYSCAPES_CLASSES),
                       expected="Cityscapes label ids 0-33 (a *_gtFine_labelIds.png, not *_labelTrainIds.png)")


class CityscapesDataModule(FileSegmentationDataModule):
    """Cityscapes gtFine; ``train_split``/``val_split`` name folders under leftImg8bit (train, val, test)."""

    name = "cityscapes"
    layout = LAYOUT
    num_classes = len(CITYSCAPES_CLASSES)
    class_names = CITYSCAPES_CLASSES

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shape = (3, *crop_shape(self.transform, self.resize, (1024, 2048)))

    def decoder(self) -> MaskDecoder:
        return label_id_decoder()

    def list_split(self, root: Path, split: str) -> list[tuple[str, Path, Path]]:
        images = root / "leftImg8bit" / split
        if not images.is_dir():
            raise self.missing(images)
        if not (root / "gtFine" / split).is_dir():
            raise self.missing(root / "gtFine" / split)
        items = []
        for image in sorted(images.glob("*/*_leftImg8bit.png")):
            stem = image.name[: -len("_leftImg8bit.png")]
            items.append((stem, image, root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelIds.png"))
        return items
