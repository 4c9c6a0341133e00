"""DCGAN generator and discriminator (Radford, Metz & Chintala 2016) for square images whose side is
a power of two times 4..7 (28, 32, 64, ...): transposed convolutions with BatchNorm and ReLU up, strided
convolutions with LeakyReLU down; spectral norm optional on the discriminator (Miyato et al. 2018)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn


def _plan(side: int) -> tuple[int, int]:
    """(initial side s0 in 4..7, number of x2 stages) with s0 * 2**n == side."""
    n = 0
    while side > 7 and side % 2 == 0:
        side //= 2
        n += 1
    if not 4 <= side <= 7 or n == 0:
        raise ValueError(f"DCGAN needs a square image side s0 * 2**n with s0 in 4..7 and n >= 1, got {side * 2**n}")
    return side, n


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int, image_shape: Sequence[int], base_width: int = 64):
        super().__init__()
        c, h, w = image_shape
        if h != w:
            raise ValueError(f"DCGAN expects square images, got {h}x{w}")
        self.latent_dim, self.image_shape = latent_dim, tuple(image_shape)
        s0, n = _plan(h)
        widths = [base_width * 2 ** (n - 1 - i) for i in range(n)]  # e.g. 128, 64 for n = 2
        self.s0, self.c0 = s0, widths[0] * 2
        self.project = nn.Sequential(
            nn.Linear(latent_dim, self.c0 * s0 * s0, bias=False), nn.BatchNorm1d(self.c0 * s0 * s0), nn.ReLU(True)
        )
        layers: list[nn.Module] = []
        cin = self.c0
        for i, cout in enumerate(widths):
            last = i == n - 1
            cout = c if last else cout
            layers.append(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(cout), nn.ReLU(True)]
            cin = cout
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(z.shape[0], self.c0, self.s0, self.s0))


class DCGANDiscriminator(nn.Module):
    """Strided convolutions to a s0 x s0 map, then one logit per image. `norm`: batch, layer or none
    (use none or layer with gradient penalties; spectral norm replaces normalisation)."""

    def __init__(self, image_shape: Sequence[int], base_width: int = 64, spectral_norm: bool = False,
                 norm: str = "batch"):
        super().__init__()
        c, h, _ = image_shape
        s0, n = _plan(h)
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"model.discriminator.norm: choose batch, layer or none, got {norm!r}")
        wrap = _sn if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        cin, side = c, h
        for i in range(n):
            cout = base_width * 2**i
            side //= 2
            layers.append(wrap(nn.Conv2d(cin, cout, 4, 2, 1, bias=i == 0 or norm == "none" or spectral_norm)))
            if i > 0 and not spectral_norm and norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif i > 0 and not spectral_norm and norm == "layer":
                layers.append(nn.GroupNorm(1, cout))
            layers.append(nn.LeakyReLU(0.2, True))
            cin = cout
        self.features = nn.Sequential(*layers)
        self.head = wrap(nn.Linear(cin * s0 * s0, 1))
        _dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1)).squeeze(1)


def _dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) weights, N(1, 0.02) norm scales, as in the DCGAN paper."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
