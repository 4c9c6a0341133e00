"""DiffAugment (src/networks/diffaugment.py)."""
from __future__ import annotations

import pytest
import torch

from src.networks.diffaugment import (
    POLICIES, DiffAugment, brightness, contrast, cut_rectangles, cutout, cutout_size, diff_augment, max_shift,
    saturation, shift_images, translation,
)

SHAPES = [(4, 1, 28, 28), (4, 3, 32, 32), (3, 3, 20, 12)]
ALL_POLICIES = ["color", "translation", "cutout", "color,translation,cutout", ["translation", "cutout"]]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clone(g: torch.Generator) -> torch.Generator:
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


def images(shape, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=gen(seed)) * 2 - 1


@pytest.mark.parametrize("policy", ["", [], " , ", ()])
def test_empty_policy_is_identity(policy):
    x = images((2, 3, 8, 8))
    assert torch.equal(diff_augment(x, policy, gen(0)), x)
    assert torch.equal(DiffAugment(policy)(x), x)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_reproducible_shape_and_dtype(shape, policy):
    x = images(shape)
    a = diff_augment(x, policy, gen(1))
    b = diff_augment(x, policy, gen(1))
    c = diff_augment(x, policy, gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()
    module = DiffAugment(policy)
    assert torch.equal(module(x, gen(1)), a)


def test_dtype_preserved_and_draws_independent_of_dtype():
    x = images((3, 3, 16, 16))
    a = diff_augment(x, "color,translation,cutout", gen(3))
    b = diff_augment(x.double(), "color,translation,cutout", gen(3))
    assert b.dtype == torch.float64
    torch.testing.assert_close(b.float(), a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_gradient_flows_to_the_input(shape, policy):
    x = images(shape).requires_grad_(True)
    weights = torch.randn(shape, generator=gen(5))
    (diff_augment(x, policy, gen(4)) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).any(dim=(1, 2, 3)).all()          # every image receives a gradient


def test_max_shift_and_cutout_size_follow_the_papers_rounding():
    assert [max_shift(s) for s in (28, 32, 64, 3, 4, 12)] == [4, 4, 8, 0, 1, 2]
    assert [cutout_size(s) for s in (28, 32, 64, 1, 5)] == [14, 16, 32, 1, 3]


def test_shift_images_moves_content_by_the_given_offsets():
    x = torch.zeros(3, 2, 6, 7)
    x[:, :, 2, 3] = 1.0
    out = shift_images(x, torch.tensor([[1, -2], [0, 0], [-3, 4]]))
    for b, (dy, dx) in enumerate([(1, -2), (0, 0), (-3, 4)]):
        expected = torch.zeros(2, 6, 7)
        if 0 <= 2 + dy < 6 and 0 <= 3 + dx < 7:
            expected[:, 2 + dy, 3 + dx] = 1.0
        assert torch.equal(out[b], expected), b
    # shifting everything off the image leaves zeros
    assert torch.equal(shift_images(x, torch.tensor([[9, 0], [0, -20], [6, 7]])), torch.zeros_like(x))


@pytest.mark.parametrize("shape", [(64, 1, 28, 28), (64, 3, 32, 32), (64, 1, 24, 10)])
def test_translation_moves_a_one_hot_pixel_by_the_drawn_offsets(shape):
    b, c, h, w = shape
    x = torch.zeros(shape)
    rows, cols = torch.randint(0, h, (b,), generator=gen(6)), torch.randint(0, w, (b,), generator=gen(7))
    x[torch.arange(b), :, rows, cols] = 1.0
    g = gen(8)
    ref = clone(g)
    mh, mw = max_shift(h), max_shift(w)
    dy = torch.randint(-mh, mh + 1, (b,), generator=ref)            # the documented draw order
    dx = torch.randint(-mw, mw + 1, (b,), generator=ref)
    out = translation(x, g)
    assert (dy.abs() <= mh).all() and (dx.abs() <= mw).all() and (dy != 0).any() and (dx != 0).any()
    for i in range(b):
        inside = 0 <= rows[i] + dy[i] < h and 0 <= cols[i] + dx[i] < w
        assert out[i].sum() == (c if inside else 0)                   # mass preserved unless it left the image
        if inside:
            nz = out[i, 0].nonzero()
            assert nz.tolist() == [[rows[i] + dy[i], cols[i] + dx[i]]]
            assert (out[i] == out[i, :1]).all()                       # all channels moved together


@pytest.mark.parametrize("shape", [(64, 1, 28, 28), (64, 3, 32, 32), (64, 2, 15, 9)])
def test_cutout_zeroes_exactly_the_clipped_square(shape):
    b, c, h, w = shape
    x = torch.rand(shape, generator=gen(9)) + 0.5                     # no zeros before cutout
    g = gen(10)
    ref = clone(g)
    sh, sw = cutout_size(h), cutout_size(w)
    top = torch.randint(-(sh // 2), h - (sh + 1) // 2 + 1, (b,), generator=ref)
    left = torch.randint(-(sw // 2), w - (sw + 1) // 2 + 1, (b,), generator=ref)
    out = cutout(x, g)
    clipped = False
    for i in range(b):
        t, l_ = int(top[i]), int(left[i])
        r0, r1, c0, c1 = max(t, 0), min(t + sh, h), max(l_, 0), min(l_ + sw, w)
        assert r1 - r0 >= (sh + 1) // 2 and c1 - c0 >= (sw + 1) // 2       # at least half of it inside
        clipped |= (r1 - r0) * (c1 - c0) < sh * sw
        zero = out[i] == 0
        expected = torch.zeros(h, w, dtype=torch.bool)
        expected[r0:r1, c0:c1] = True
        assert torch.equal(zero, expected.expand(c, h, w)), i
        assert torch.equal(out[i][~zero], x[i][~zero])
    assert clipped                                                     # some squares were partly outside
    assert (out == 0).flatten(1).sum(1).max() == c * sh * sw           # and some were fully inside


def test_cut_rectangles_with_explicit_corners():
    x = torch.ones(2, 1, 4, 4)
    out = cut_rectangles(x, torch.tensor([[-1, 2], [1, 1]]), (2, 2))
    assert out[0, 0].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert out[1, 0].tolist() == [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]


@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_shifts_a_constant_image_by_the_drawn_amount(channels):
    x = torch.full((16, channels, 8, 8), 0.25)
    g = gen(11)
    delta = torch.rand(16, generator=clone(g)) - 0.5
    out = brightness(x, g)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), 0.25 + delta)
    assert (out == out[:, :1, :1, :1]).all()                           # still constant per image
    assert (delta.abs() <= 0.5).all() and delta.std() > 0.1
    # on a constant image saturation and contrast are identities, so "color" is brightness alone
    torch.testing.assert_close(diff_augment(x, "color", gen(11)), out)


def test_contrast_keeps_the_per_image_mean_and_scales_the_deviation():
    x = images((8, 3, 16, 16), seed=12)
    g = gen(13)
    factor = torch.rand(8, generator=clone(g)) + 0.5
    out = contrast(x, g)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3), keepdim=True), mean)
    torch.testing.assert_close(out - mean, (x - mean) * factor.view(-1, 1, 1, 1))
    assert ((factor >= 0.5) & (factor <= 1.5)).all()


def test_saturation_keeps_the_channel_mean_and_is_the_identity_on_one_channel():
    x = images((8, 3, 10, 10), seed=14)
    g = gen(15)
    factor = torch.rand(8, generator=clone(g)) * 2
    out = saturation(x, g)
    mean = x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out.mean(dim=1, keepdim=True), mean)
    torch.testing.assert_close(out - mean, (x - mean) * factor.view(-1, 1, 1, 1))
    gray = images((8, 1, 10, 10), seed=16)
    assert torch.equal(saturation(gray, gen(15)), gray)


def test_values_are_not_clamped():
    x = torch.full((32, 3, 8, 8), 0.95)
    out = diff_augment(x, "color", gen(17))
    assert out.max() > 1.0 or out.min() < -1.0


def test_policy_order_and_module_repr():
    x = images((2, 3, 16, 16), seed=18)
    forward = diff_augment(x, "translation,cutout", gen(19))
    assert not torch.equal(forward, diff_augment(x, "cutout,translation", gen(19)))
    assert DiffAugment(["color", "cutout"]).policy == ("color", "cutout")
    assert "color,cutout" in repr(DiffAugment(" color , cutout "))
    assert set(POLICIES) == {"color", "translation", "cutout"}


@pytest.mark.parametrize("policy", ["colour", "color,flip", ["translation", "rotate"]])
def test_unknown_policy_raises_listing_the_valid_ones(policy):
    with pytest.raises(ValueError, match="color, translation, cutout"):
        DiffAugment(policy)
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        diff_augment(torch.zeros(1, 1, 4, 4), policy)


def test_bad_images_raise():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        diff_augment(torch.zeros(3, 8, 8), "color")
    with pytest.raises(ValueError, match="floating-point"):
        diff_augment(torch.zeros(1, 1, 8, 8, dtype=torch.long), "translation")


def test_default_generator_is_used_when_none_is_given():
    x = images((4, 3, 16, 16), seed=20)
    torch.manual_seed(21)
    a = DiffAugment()(x)
    torch.manual_seed(21)
    b = DiffAugment()(x)
    assert torch.equal(a, b) and not torch.equal(a, x)
