"""Fully connected generator and discriminator for 2D mixtures and flattened images."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn


def _layers(sizes: Sequence[int], activation: nn.Module, sn: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(a, b)
        layers.append(_sn(linear) if sn else linear)
        if i < len(sizes) - 2:
            layers.append(activation)
    return layers


class MLPGenerator(nn.Module):
    """z -> hidden layers -> data of `data_shape` (tanh output for images, linear for points)."""

    def __init__(self, latent_dim: int, data_shape: Sequence[int], hidden: Sequence[int] = (400, 400, 400),
                 output: str = "linear"):
        super().__init__()
        self.latent_dim = latent_dim
        self.data_shape = tuple(data_shape)
        self.net = nn.Sequential(*_layers([latent_dim, *hidden, math.prod(self.data_shape)], nn.ReLU()))
        if output not in ("linear", "tanh"):
            raise ValueError(f"model.generator.output: choose 'linear' or 'tanh', got {output!r}")
        self.out = nn.Tanh() if output == "tanh" else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(z)).view(z.shape[0], *self.data_shape)


class MLPDiscriminator(nn.Module):
    """data -> hidden layers -> one logit per sample; spectral norm optional."""

    def __init__(self, data_shape: Sequence[int], hidden: Sequence[int] = (400, 400, 400),
                 spectral_norm: bool = False, negative_slope: float = 0.2):
        super().__init__()
        sizes = [math.prod(data_shape), *hidden, 1]
        self.net = nn.Sequential(*_layers(sizes, nn.LeakyReLU(negative_slope), sn=spectral_norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)
