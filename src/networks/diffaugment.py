"""Differentiable augmentation for data-efficient GAN training.

S. Zhao, Z. Liu, J. Lin, J.-Y. Zhu and S. Han, "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020. The same family of random, differentiable transformations T is applied to the
real and to the generated images before every discriminator call, in the discriminator's step
(D(T(x)) and D(T(G(z)))) and in the generator's step (D(T(G(z)))), so that the generator's gradient
flows through T. Each call draws fresh parameters per image (the paper's code augments the real and the
fake batch with independent draws; pass the same generator state twice to get identical draws).

Policies (applied in the order given; images are expected in [-1, 1] and are never clamped):

* ``color``: brightness, then saturation, then contrast, each with one factor per image:
  brightness adds U(-0.5, 0.5); saturation scales each pixel's deviation from its channel mean by U(0, 2)
  (on 1-channel images the deviation is 0, so saturation is the identity, but its draw is still made so
  that the random stream does not depend on the channel count); contrast scales the deviation from the
  image's mean over channels and pixels by U(0.5, 1.5) (so it keeps that mean).
* ``translation``: shifts each image by an integer (dy, dx), each uniform in [-m, m] with
  m = int(side / 8 + 0.5) per axis (the rounding of the paper's code: 28 -> 4, 32 -> 4, 64 -> 8); the
  content moves by (+dy, +dx) and the uncovered border is zero.
* ``cutout``: zeroes an s_h x s_w rectangle, s = int(side / 2 + 0.5) per axis (a square on square
  images), at a random position per image; the rectangle may lie partly outside the image: its top-left
  corner is uniform over the positions that keep at least ceil(s / 2) of its rows and of its columns
  inside, as in the paper's code.

Randomness: every draw uses the ``generator`` argument (or torch's default generator when it is None)
and is made on the generator's device, in float32 / int64, then moved to the images, so a CPU generator
gives the same augmentation for CPU and GPU images and for any image dtype. Draws per call, in policy
order: color -> 3 x torch.rand(B); translation -> torch.randint(-m_h, m_h + 1, (B,)) then the same for
m_w; cutout -> torch.randint for the row then for the column of the corner. Gradients flow to the images
(through additions / scalings, indexing and masks), never to the random parameters.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "POLICIES", "TRANSLATION_RATIO", "CUTOUT_RATIO", "diff_augment", "DiffAugment", "parse_policy",
    "max_shift", "cutout_size", "brightness", "saturation", "contrast", "color", "translation", "cutout",
    "shift_images", "cut_rectangles",
]

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 1 / 8
CUTOUT_RATIO = 1 / 2


def parse_policy(policy: Sequence[str] | str) -> tuple[str, ...]:
    """"color,translation" or ["color", "translation"] -> ("color", "translation"); "" or [] -> ().
    Raises ValueError on unknown names."""
    if isinstance(policy, str):
        names = [p.strip() for p in policy.split(",")]
    else:
        names = [str(p).strip() for p in policy]
    names = tuple(p for p in names if p)
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; valid policies: {', '.join(POLICIES)}")
    return names


def max_shift(side: int, ratio: float = TRANSLATION_RATIO) -> int:
    """Largest translation along an axis of length `side`: int(side * ratio + 0.5)."""
    return int(side * ratio + 0.5)


def cutout_size(side: int, ratio: float = CUTOUT_RATIO) -> int:
    """Cutout extent along an axis of length `side`: int(side * ratio + 0.5)."""
    return int(side * ratio + 0.5)


def _check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"DiffAugment expects a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise ValueError(f"DiffAugment expects floating-point images, got {x.dtype}")


def _draw_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def _uniform(x: Tensor, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """(B, 1, 1, 1) factors, U(low, high), drawn in float32 on the generator's device."""
    u = torch.rand(x.shape[0], generator=generator, device=_draw_device(x, generator), dtype=torch.float32)
    return (u * (high - low) + low).to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _randint(x: Tensor, low: int, high_inclusive: int, generator: torch.Generator | None) -> Tensor:
    """(B,) integers uniform in [low, high_inclusive], drawn on the generator's device."""
    r = torch.randint(low, high_inclusive + 1, (x.shape[0],), generator=generator, device=_draw_device(x, generator))
    return r.to(x.device)


def brightness(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """x + U(-0.5, 0.5), one offset per image."""
    return x + _uniform(x, -0.5, 0.5, generator)


def saturation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Scales each pixel's deviation from its mean over channels by U(0, 2) per image (identity for C = 1)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x, 0.0, 2.0, generator) + mean


def contrast(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Scales the deviation from each image's mean (over channels and pixels) by U(0.5, 1.5) per image."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5, generator) + mean


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """brightness, then saturation, then contrast."""
    return contrast(saturation(brightness(x, generator), generator), generator)


def shift_images(x: Tensor, shifts: Tensor) -> Tensor:
    """Moves the content of image b by shifts[b] = (dy, dx) integer pixels, filling with zeros:
    out[b, :, i, j] = x[b, :, i - dy, j - dx] where that pixel exists, else 0. Differentiable in x."""
    b, _, h, w = x.shape
    shifts = shifts.to(device=x.device, dtype=torch.long)
    ph = int(shifts[:, 0].abs().max()) if b else 0
    pw = int(shifts[:, 1].abs().max()) if b else 0
    ph, pw = min(ph, h), min(pw, w)                 # a larger shift empties the image either way
    padded = F.pad(x, (pw, pw, ph, ph))
    rows = (torch.arange(h, device=x.device)[None, :] - shifts[:, :1]).clamp(-ph, h - 1 + ph) + ph   # (B, H)
    cols = (torch.arange(w, device=x.device)[None, :] - shifts[:, 1:]).clamp(-pw, w - 1 + pw) + pw   # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]       # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def translation(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random integer shift per image, |dy| <= max_shift(H), |dx| <= max_shift(W), zero padding."""
    _, _, h, w = x.shape
    mh, mw = max_shift(h), max_shift(w)
    dy = _randint(x, -mh, mh, generator)
    dx = _randint(x, -mw, mw, generator)
    return shift_images(x, torch.stack([dy, dx], dim=1))


def cut_rectangles(x: Tensor, corners: Tensor, size: tuple[int, int]) -> Tensor:
    """Zeroes rows [top, top + size[0]) x columns [left, left + size[1]) of image b, corners[b] = (top, left)
    (may be negative or run past the border; only the part inside the image is zeroed). Differentiable in x."""
    _, _, h, w = x.shape
    corners = corners.to(device=x.device, dtype=torch.long)
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    top, left = corners[:, :1], corners[:, 1:]
    in_rows = (rows >= top) & (rows < top + size[0])                 # (B, H)
    in_cols = (cols >= left) & (cols < left + size[1])               # (B, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])              # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def cutout(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Zeroes a cutout_size(H) x cutout_size(W) rectangle per image; at least ceil(s / 2) of its rows and
    columns lie inside the image."""
    _, _, h, w = x.shape
    sh, sw = cutout_size(h), cutout_size(w)
    top = _randint(x, -(sh // 2), h - (sh + 1) // 2, generator)
    left = _randint(x, -(sw // 2), w - (sw + 1) // 2, generator)
    return cut_rectangles(x, torch.stack([top, left], dim=1), (sh, sw))


_OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: Sequence[str] | str, generator: torch.Generator | None = None) -> Tensor:
    """Applies the policies (e.g. "color,translation,cutout" or a list) in order; "" / [] is the identity
    (x itself is returned). Shape and dtype are preserved. See the module docstring for the draws."""
    names = parse_policy(policy)
    _check_images(x)
    for name in names:
        x = _OPS[name](x, generator)
    return x


class DiffAugment(nn.Module):
    """Holds a DiffAugment policy; ``forward(x, generator=None)`` applies :func:`diff_augment`. Apply it to
    the real and to the fake images before every discriminator call, in both players' steps."""

    def __init__(self, policy: Sequence[str] | str = "color,translation,cutout"):
        super().__init__()
        self.policy = parse_policy(policy)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return diff_augment(x, self.policy, generator)

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy) or '(identity)'}"
