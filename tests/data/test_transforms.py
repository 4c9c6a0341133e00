"""Joint image/mask augmentation: image and mask stay aligned, masks keep their label set (padding is
255), every draw comes from the generator passed in (reproducible, independent of the global RNG)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.data.transforms import JointTransform, build_transform, resize_pair, sample_generator
from src.utils.errors import ConfigError

K = 6


def label_image(h: int = 72, w: int = 60, block: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A mask of random class blocks (some void) and an image whose 3 channels all encode the label
    (value label / 10, void 25.5), so alignment can be read back from the pixels."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, K, (h // block + 1, w // block + 1), generator=g)
    coarse[0, 0] = 255
    mask = coarse.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w]
    image = (mask.float() / 10).expand(3, h, w).clone()
    return image, mask


def uniform_interior(mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose (2 radius + 1)^2 neighbourhood holds one label and that are not within `radius` of
    the edge (a crop edge hides neighbours): where bilinear resampling by a scale <= radius is exact."""
    m = mask[None, None].float()
    k = 2 * radius + 1
    hi = F.max_pool2d(m, k, stride=1, padding=radius)
    lo = -F.max_pool2d(-m, k, stride=1, padding=radius)
    inside = (hi == lo)[0, 0]
    inside[:radius], inside[-radius:], inside[:, :radius], inside[:, -radius:] = False, False, False, False
    return inside


@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned(seed):
    image, mask = label_image(seed=seed)
    t = JointTransform(scale=(0.5, 2.0), crop=36, flip=True, image_fill=-1.0)
    out_image, out_mask = t(image, mask, torch.Generator().manual_seed(seed))
    assert out_image.shape == (3, 36, 36) and out_mask.shape == (36, 36)
    assert out_mask.dtype == mask.dtype
    assert set(out_mask.unique().tolist()) <= set(range(K)) | {255}
    padded = (out_image[0] == -1.0)
    assert (out_mask[padded] == 255).all()  # padding: image fill and void together
    inside = uniform_interior(out_mask) & ~padded
    assert inside.sum() >= 20
    decoded = (out_image[0][inside] * 10).round().long()
    assert torch.equal(decoded, out_mask[inside])
    assert torch.allclose(out_image[0], out_image[1]) and torch.allclose(out_image[0], out_image[2])


def test_flip_and_crop_alone_are_exact():
    image, mask = label_image(seed=3)
    t = JointTransform(crop=(20, 30), flip=True)
    for seed in range(8):
        out_image, out_mask = t(image, mask, torch.Generator().manual_seed(seed))
        assert torch.equal((out_image[0] * 10).round().long(), out_mask.masked_fill(out_mask == 255, 255))


def test_pads_small_inputs_with_void():
    image, mask = label_image(h=10, w=12)
    out_image, out_mask = JointTransform(crop=16, image_fill=0.0)(image, mask, torch.Generator().manual_seed(0))
    assert out_mask.shape == (16, 16)
    assert (out_mask[10:] == 255).all() and (out_mask[:, 12:] == 255).all()
    assert (out_image[:, 10:] == 0).all()
    assert torch.equal(out_mask[:10, :12], mask)


def test_generator_drives_every_draw():
    image, mask = label_image()
    t = JointTransform(scale=(0.5, 2.0), crop=24, flip=True)
    torch.manual_seed(0)
    a = t(image, mask, sample_generator(1, 0, 3, 7))
    torch.manual_seed(123)  # the global RNG plays no part
    b = t(image, mask, sample_generator(1, 0, 3, 7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outs = {t(image, mask, sample_generator(1, 0, epoch, 7))[1].sum().item() for epoch in range(8)}
    assert len(outs) > 1  # another epoch, another augmentation


def test_resize_pair_nearest_keeps_labels():
    image, mask = label_image()
    img2, mask2 = resize_pair(image, mask, (97, 31))
    assert img2.shape == (3, 97, 31) and mask2.shape == (97, 31)
    assert set(mask2.unique().tolist()) <= set(mask.unique().tolist())
    up_image, up_mask = resize_pair(image, mask, (144, 120))  # exact 2x: nearest = pixel replication
    assert torch.equal(up_mask, mask.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_build_transform_from_config():
    assert build_transform(None) is None
    assert build_transform({"scale": None, "crop": None, "flip": False}) is None
    t = build_transform({"scale": [0.5, 2.0], "crop": 321, "flip": True})
    assert t.scale == (0.5, 2.0) and t.crop == (321, 321) and t.flip
    with pytest.raises(ConfigError, match="dataset.augment"):
        build_transform({"scael": [0.5, 2.0]})
    with pytest.raises(ConfigError, match="dataset.augment.scale"):
        build_transform({"scale": [2.0, 0.5]})
    with pytest.raises(ConfigError, match="dataset.augment.crop"):
        build_transform({"crop": 0})
