"""``digit_crops``: single digits on the scenes' textures, labelled by class: the classification data that
pretrains a scenes segmenter's encoder, the scenes analogue of ImageNet pretraining for VOC.

Each image is a one-digit scene (:func:`src.data.scenes.render_scenes`: the same textures, colours,
rotations and compositing) of side ``size``, the digit's box ``digit_scale`` times the side (the default
0.375-0.625 of 64 pixels matches the digits of the 64x64 scenes with up to 4 digits), labelled with the
digit's class 0..9. Only the scenes' *training* source digits are drawn (the split of
:func:`src.data.scenes.split_sources` with the same ``val_source_fraction``, ``test_source_fraction`` and
``generation_seed`` as conf/dataset/scenes.yaml), so no digit of a val or test scene is ever seen in
pretraining; the train and val crops are different renderings (separate streams) of those digits.
Images are normalised per channel by the statistics of the training crops.
"""
from __future__ import annotations

import functools

import torch

from src.data.base import ResumableDataModule, Tensors
from src.data.scenes import _digit_images, render_scenes, split_sources
from src.utils.schema import require


@functools.lru_cache(maxsize=2)
def generate_crops(num_train: int, num_val: int, size: int, digit_scale: tuple[float, float],
                   val_source_fraction: float, test_source_fraction: float,
                   generation_seed: int) -> tuple[torch.Tensor, ...]:
    """(train images, labels, source digits, val images, labels, source digits): uint8 (N, 3, size, size),
    int64 (N,) classes and int64 (N,) indices into the 5,000 digits."""
    digits, classes = _digit_images()
    train_src, _, _ = split_sources(len(digits), val_source_fraction, generation_seed, test_source_fraction)
    out = []
    for num, stream in ((num_train, 0x0C), (num_val, 0x0D)):
        images, _, which = render_scenes(digits[train_src], classes[train_src], num, size=size, min_digits=1,
                                         max_digits=1, scale=digit_scale, void_width=0,
                                         seed=generation_seed * 16 + stream, return_sources=True)
        out += [images, classes[train_src][which[:, 0]].long(), train_src[which[:, 0]]]
    return tuple(out)


class DigitCropsDataModule(ResumableDataModule):
    """Single textured digits (see the module docstring); 10 classes.

    Args:
        size: image side in pixels.
        num_train, num_val: numbers of images.
        digit_scale: [lo, hi] digit box side relative to the image side.
        val_source_fraction, test_source_fraction, generation_seed: the scenes' source-digit split (as in
            conf/dataset/scenes.yaml): only its training digits are drawn.
    """

    num_classes = 10
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, size: int = 64, num_train: int = 8000, num_val: int = 1000, digit_scale=(0.375, 0.625),
                 val_source_fraction: float = 0.1, test_source_fraction: float = 0.1, generation_seed: int = 1234,
                 **kwargs):
        super().__init__(**kwargs)
        digit_scale = tuple(float(s) for s in digit_scale)
        require(len(digit_scale) == 2 and 0 < digit_scale[0] <= digit_scale[1], "dataset.digit_scale",
                f"expected [lo, hi] with 0 < lo <= hi; got {list(digit_scale)}")
        require(int(size) >= 8, "dataset.size", f"expected >= 8, got {size}")
        require(int(num_train) >= 1 and int(num_val) >= 1, "dataset.num_train/num_val", "expected >= 1")
        self.size, self.num_train, self.num_val, self.digit_scale = int(size), int(num_train), int(num_val), digit_scale
        self.split = (float(val_source_fraction), float(test_source_fraction), int(generation_seed))
        self.shape = (3, self.size, self.size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        xt, yt, _, xv, yv, _ = generate_crops(self.num_train, self.num_val, self.size, self.digit_scale, *self.split)
        train = xt.float().div_(255)
        mean, std = train.mean(dim=(0, 2, 3)).view(1, 3, 1, 1), train.std(dim=(0, 2, 3)).view(1, 3, 1, 1)
        self.mean, self.std = mean.flatten().tolist(), std.flatten().tolist()
        self.train_set = Tensors((train - mean) / std, yt)
        self.val_set = Tensors((xv.float().div_(255) - mean) / std, yv)
