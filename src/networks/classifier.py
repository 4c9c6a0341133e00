"""Small image-recognition networks for 28x28 / 32x32 / 64x64 images.

:class:`ConvNet` is a LeNet-style stack (LeCun et al. 1998) made of VGG-style blocks (Simonyan &
Zisserman 2015): per block ``convs_per_block`` 3x3 convolutions (BatchNorm, LeakyReLU), then a 2x2
max-pool; the last map flattened (or globally averaged); a fully connected feature layer of
``feature_dim`` units; the class logits. ``residual: true`` adds an identity (1x1 projection) shortcut around each block's convolutions
(He et al. 2016).

Besides ``forward(x) -> logits`` every network here has ``features(x)``, the penultimate activations
(N, feature_dim), and ``forward_with_features(x) -> (features, logits)``: the GAN quality metrics use a
trained classifier as their feature extractor (penultimate features for FID / KID, logits for IS), and the
semi-supervised GAN's generator matches the discriminator's features (Salimans et al. 2016).

``input_noise`` / ``hidden_noise`` add Gaussian noise (std) to the input / to each block's output while
training, as in the semi-supervised GAN discriminator of Salimans et al. 2016 ("Improved techniques for
training GANs"); ``dropout`` is applied before each fully connected layer.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode; the identity in eval mode."""

    def __init__(self, std: float):
        super().__init__()
        self.std = float(std)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.std <= 0:
            return x
        return x + self.std * torch.randn_like(x)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"model.network.norm: choose batch, layer or none, got {kind!r}")


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, convs: int, norm: str, residual: bool, noise: float, pool: bool):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for i in range(convs):
            last = i == convs - 1
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=norm == "none"), _norm(norm, cout)]
            if not (residual and last):
                layers.append(nn.LeakyReLU(0.1, inplace=True))
            c = cout
        self.body = nn.Sequential(*layers)
        self.shortcut = None
        if residual:
            self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)
        self.act = nn.LeakyReLU(0.1, inplace=True) if residual else nn.Identity()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.noise = GaussianNoise(noise)

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if self.shortcut is not None:
            out = self.act(out + self.shortcut(x))
        return self.noise(self.pool(out))


class ConvNet(nn.Module):
    """A configurable small CNN classifier.

    Args:
        image_shape: (C, H, W) of the inputs (images in [-1, 1], as the data modules serve them).
        num_classes: number of logits.
        widths: channels of each block; each block halves the side with a max-pool (not below 4x4).
        convs_per_block: 3x3 convolutions per block.
        feature_dim: width of the penultimate (feature) layer.
        norm: batch | layer | none.
        residual: identity shortcuts around each block.
        dropout: dropout before the feature and the logit layers.
        input_noise, hidden_noise: Gaussian noise std on the input and after each block (training only).
        global_pool: average the last block's map to one vector per channel (any input size); default:
            flatten it (more accurate for small nets at a fixed size).
    """

    def __init__(self, image_shape: Sequence[int], num_classes: int = 10, widths: Sequence[int] = (16, 32),
                 convs_per_block: int = 1, feature_dim: int = 128, norm: str = "batch", residual: bool = False,
                 dropout: float = 0.0, input_noise: float = 0.0, hidden_noise: float = 0.0,
                 global_pool: bool = False):
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if num_classes < 1 or feature_dim < 1 or not widths or convs_per_block < 1:
            raise ValueError("ConvNet: num_classes, feature_dim, widths and convs_per_block must be positive")
        self.image_shape, self.num_classes, self.feature_dim = (c, h, w), int(num_classes), int(feature_dim)
        self.num_features = self.feature_dim  # what torchmetrics' custom feature extractors read
        blocks: list[nn.Module] = [GaussianNoise(input_noise)]
        cin, sh, sw = c, h, w
        for width in widths:
            pool = min(sh, sw) >= 8  # stop halving at 4x4
            blocks.append(_Block(cin, int(width), convs_per_block, norm, residual, hidden_noise, pool))
            cin = int(width)
            sh, sw = (sh // 2, sw // 2) if pool else (sh, sw)
        self.body = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1) if global_pool else nn.Identity()
        flat = cin if global_pool else cin * sh * sw
        self.feature = nn.Sequential(nn.Dropout(dropout), nn.Linear(flat, self.feature_dim),
                                     nn.LeakyReLU(0.1, inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, self.num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations (N, feature_dim)."""
        return self.feature(self.pool(self.body(x)).flatten(1))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return f, self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLPGenerator(nn.Module):
    """The semi-supervised GAN generator of Salimans et al. 2016 for MNIST: z -> 500 -> 500 -> C*H*W with
    BatchNorm and softplus, tanh output in [-1, 1]. ``hidden`` sets the layer widths."""

    def __init__(self, latent_dim: int, image_shape: Sequence[int], hidden: Sequence[int] = (500, 500)):
        super().__init__()
        self.latent_dim, self.image_shape = int(latent_dim), tuple(int(v) for v in image_shape)
        layers: list[nn.Module] = []
        d = self.latent_dim
        for width in hidden:
            layers += [nn.Linear(d, int(width), bias=False), nn.BatchNorm1d(int(width)), nn.Softplus()]
            d = int(width)
        out = 1
        for v in self.image_shape:
            out *= v
        layers += [nn.Linear(d, out), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPClassifier(nn.Module):
    """A fully connected classifier on flattened images: the semi-supervised GAN discriminator of Salimans
    et al. 2016 for MNIST (hidden 1000-500-250-250-250, Gaussian noise 0.3 on the input and 0.5 after each
    hidden layer while training). Same interface as :class:`ConvNet` (``features`` = last hidden layer)."""

    def __init__(self, image_shape: Sequence[int], num_classes: int = 10,
                 hidden: Sequence[int] = (1000, 500, 250, 250, 250), input_noise: float = 0.0,
                 hidden_noise: float = 0.0, dropout: float = 0.0):
        super().__init__()
        self.image_shape, self.num_classes = tuple(int(v) for v in image_shape), int(num_classes)
        if not hidden:
            raise ValueError("MLPClassifier: hidden must list at least one layer width")
        d = 1
        for v in self.image_shape:
            d *= v
        layers: list[nn.Module] = [nn.Flatten(), GaussianNoise(input_noise)]
        for width in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(d, int(width)), nn.LeakyReLU(0.1, inplace=True),
                       GaussianNoise(hidden_noise)]
            d = int(width)
        self.body = nn.Sequential(*layers)
        self.feature_dim = self.num_features = d
        self.head = nn.Linear(d, self.num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return f, self.head(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
