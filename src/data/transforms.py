"""Joint image/mask augmentation for semantic segmentation, reproducible without the global RNG.

The recipe is the one of Hung et al. 2018 ("Adversarial Learning for Semi-Supervised Semantic
Segmentation", BMVC, arXiv 1802.07934) and of most DeepLab-style training: random scale, pad to the crop
size (mask padded with the ignore label, image with the normalised mean, i.e. 0), random crop, random
horizontal flip. Images are resized bilinearly, masks by nearest neighbour with the same pixel-centre
convention (``align_corners=False`` / ``nearest-exact``) so that image and mask stay aligned.

Every random draw comes from the ``torch.Generator`` passed in; :func:`sample_generator` derives one
per sample from (seed, stream, epoch, index), so an augmented sample is a pure function of those
numbers: runs are reproducible and resume exactly whatever the number of workers.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from src.utils.schema import require

IGNORE_INDEX = 255


def sample_generator(*keys: int) -> torch.Generator:
    """A generator seeded by a hash of the integers `keys` (e.g. seed, stream, epoch, index)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def _uniform(generator: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def resize_pair(image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize an image (C, H, W) bilinearly and its mask (H, W) by nearest neighbour to `size` (h, w)."""
    h, w = mask.shape[-2:]
    nh, nw = int(size[0]), int(size[1])
    if (nh, nw) == (h, w):
        return image, mask
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
    # nearest-exact: the source pixel whose centre is nearest to the target pixel's centre
    rows = ((torch.arange(nh, dtype=torch.float64) + 0.5) * (h / nh)).floor().long().clamp_(0, h - 1)
    cols = ((torch.arange(nw, dtype=torch.float64) + 0.5) * (w / nw)).floor().long().clamp_(0, w - 1)
    return image, mask[rows[:, None], cols[None, :]]


class JointTransform:
    """Random scale, pad + random crop, random horizontal flip, applied identically to image and mask.

    Args:
        scale: (lo, hi) range of the random scale factor, or None for no scaling.
        crop: crop size, an int or (h, w); smaller inputs are padded first (bottom/right), the mask with
            `ignore_index`, the image with `image_fill`. None: no crop.
        flip: flip horizontally with probability 1/2.
    """

    def __init__(self, scale: Sequence[float] | None = None, crop: int | Sequence[int] | None = None,
                 flip: bool = False, ignore_index: int = IGNORE_INDEX, image_fill: float = 0.0):
        if scale is not None:
            scale = tuple(float(s) for s in scale)
            require(len(scale) == 2 and 0 < scale[0] <= scale[1], "dataset.augment.scale",
                    f"expected [lo, hi] with 0 < lo <= hi, got {list(scale)}")
        if crop is not None:
            crop = (int(crop), int(crop)) if isinstance(crop, (int, float)) else tuple(int(c) for c in crop)
            require(len(crop) == 2 and min(crop) >= 1, "dataset.augment.crop",
                    f"expected a size >= 1 or [h, w], got {crop}")
        self.scale, self.crop, self.flip = scale, crop, bool(flip)
        self.ignore_index, self.image_fill = ignore_index, float(image_fill)

    def __repr__(self) -> str:
        return f"JointTransform(scale={self.scale}, crop={self.crop}, flip={self.flip})"

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """image: float (C, H, W); mask: integer (H, W). Returns the transformed pair."""
        if self.scale is not None:
            s = _uniform(generator, *self.scale)
            h, w = mask.shape[-2:]
            image, mask = resize_pair(image, mask, (max(1, round(h * s)), max(1, round(w * s))))
        if self.crop is not None:
            ch, cw = self.crop
            h, w = mask.shape[-2:]
            ph, pw = max(ch - h, 0), max(cw - w, 0)
            if ph or pw:
                image = F.pad(image, (0, pw, 0, ph), value=self.image_fill)
                mask = F.pad(mask, (0, pw, 0, ph), value=self.ignore_index)
                h, w = h + ph, w + pw
            top = int(torch.randint(h - ch + 1, (), generator=generator))
            left = int(torch.randint(w - cw + 1, (), generator=generator))
            image, mask = image[:, top:top + ch, left:left + cw], mask[top:top + ch, left:left + cw]
        if self.flip and _uniform(generator) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask


def build_transform(augment: Mapping[str, Any] | None, ignore_index: int = IGNORE_INDEX) -> JointTransform | None:
    """The transform of a dataset config's ``augment: {scale: [lo, hi], crop: N, flip: bool}`` (or null)."""
    if augment is None:
        return None
    augment = dict(augment)
    unknown = set(augment) - {"scale", "crop", "flip"}
    require(not unknown, "dataset.augment", f"unknown option(s) {sorted(unknown)}; known: scale, crop, flip")
    t = JointTransform(scale=augment.get("scale"), crop=augment.get("crop"), flip=bool(augment.get("flip", False)),
                       ignore_index=ignore_index)
    return None if t.scale is None and t.crop is None and not t.flip else t
