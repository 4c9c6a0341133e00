"""SNGAN ResNet generator and discriminator, optionally class-conditional.

References
----------
* T. Miyato, T. Kataoka, M. Koyama & Y. Yoshida, "Spectral Normalization for Generative Adversarial
  Networks", ICLR 2018 -- the ResNet architectures for CIFAR-10 of their appendix (generator: a linear
  map of z to a 4x4 map and three up-sampling residual blocks of 256 channels; discriminator: an
  "optimized" first block and three more residual blocks of 128 channels, the first two of the four
  blocks down-sampling 32 -> 16 -> 8, then ReLU, global sum pooling and a linear layer, with spectral
  normalisation on every weight of the discriminator).
* T. Miyato & M. Koyama, "cGANs with Projection Discriminator", ICLR 2018 -- class conditioning:
  conditional batch norm (a per-class gain and bias after a parameter-free batch norm) in the generator's
  residual blocks, and the projection discriminator
  ``D(x, y) = psi(phi(x)) + <embed(y), phi(x)>`` with ``phi`` the pooled features and ``psi`` linear.

Supported images are square with side ``s0 * 2**n``, ``s0`` in 4..7 and ``n >= 1`` (28, 32, 64, ...), as
for the DCGAN networks (``src/networks/dcgan.py``). The generator starts at ``s0 x s0`` and has ``n``
up-sampling blocks (32 = 4 * 2**3: three blocks; 28 = 7 * 2**2: two blocks). The discriminator halves the
side while it is larger than 8 (at least once, in its first block) and then adds two blocks that keep the
side (32 -> 16 -> 8 -> 8 -> 8 as in the paper; 28 -> 14 -> 7 -> 7 -> 7 for digits).

Initialisation (the convention of the SNGAN authors' ResNet models): Xavier-uniform with gain sqrt(2) for
the 3x3 convolutions of the residual branches, gain 1 for the 1x1 shortcut convolutions, the generator's
input linear layer and output convolution, the discriminator's linear head and class embedding; zero
biases; conditional batch norm gains 1 and biases 0. Spectral normalisation
(``torch.nn.utils.parametrizations.spectral_norm``, one power iteration per training-mode forward) is
applied after initialisation, so its power-iteration vectors start from the initial weights.

Convolutions whose output only feeds a batch norm (the first convolution of every generator block and, in
the last generator block, the second convolution and the shortcut) carry no bias: the batch norm's mean
subtraction would cancel it, leaving a parameter without gradient. At the paper's widths for 32x32 RGB the
generator has 4,275,459 parameters and the discriminator 1,053,825 (unconditional).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

__all__ = ["SNGANGenerator", "SNGANDiscriminator", "ConditionalBatchNorm2d"]

_RESIDUAL_GAIN = math.sqrt(2.0)


def _plan(image_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Check image_shape = (C, S, S) and return (C, S, s0, n) with S == s0 * 2**n, s0 in 4..7, n >= 1."""
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3:
        raise ValueError(f"SNGAN expects image_shape (C, H, W), got {tuple(image_shape)}")
    c, h, w = shape
    if c < 1:
        raise ValueError(f"SNGAN needs at least one image channel, got C={c}")
    if h != w:
        raise ValueError(f"SNGAN expects square images, got {h}x{w}")
    side, n = h, 0
    while side > 7 and side % 2 == 0:
        side //= 2
        n += 1
    if not 4 <= side <= 7 or n == 0:
        raise ValueError(f"SNGAN needs a square image side s0 * 2**n with s0 in 4..7 and n >= 1, got {h}")
    return c, h, side, n


def _check_width(name: str, value: int) -> int:
    if int(value) < 1:
        raise ValueError(f"SNGAN {name} must be a positive integer, got {value}")
    return int(value)


def _check_num_classes(num_classes: int | None) -> int | None:
    if num_classes is None:
        return None
    if int(num_classes) < 1:
        raise ValueError(f"SNGAN num_classes must be None or a positive integer, got {num_classes}")
    return int(num_classes)


def _check_labels(owner: str, num_classes: int | None, y: torch.Tensor | None, batch: int) -> None:
    if num_classes is None:
        if y is not None:
            raise ValueError(f"{owner} is unconditional (num_classes=None) but was given class labels y")
        return
    if y is None:
        raise ValueError(f"{owner} has num_classes={num_classes}, so forward needs class labels y (shape (B,))")
    if y.dim() != 1 or y.shape[0] != batch:
        raise ValueError(f"{owner}: y must have shape ({batch},), got {tuple(y.shape)}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{owner}: y must hold integer class ids, got dtype {y.dtype}")


def _make(layer: nn.Module, gain: float, sn: bool) -> nn.Module:
    """Xavier-uniform init of `layer.weight` (zero bias), then spectral norm if `sn`."""
    nn.init.xavier_uniform_(layer.weight, gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return _spectral_norm(layer) if sn else layer


def _conv(cin: int, cout: int, k: int, gain: float, sn: bool = False, bias: bool = True) -> nn.Module:
    return _make(nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias), gain, sn)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d without affine parameters followed by a per-class gain and bias (embeddings initialised
    to 1 and 0). With ``num_classes=None`` it is an ordinary affine BatchNorm2d (and ignores y)."""

    def __init__(self, num_features: int, num_classes: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(num_features, affine=num_classes is None)
        if num_classes is not None:
            self.gain = nn.Embedding(num_classes, num_features)
            self.bias = nn.Embedding(num_classes, num_features)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.bn(x)
        if self.num_classes is None:
            return h
        return h * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class _GeneratorBlock(nn.Module):
    """(C)BN, ReLU, nearest x2, conv3x3, (C)BN, ReLU, conv3x3; shortcut nearest x2 then conv1x1."""

    def __init__(self, cin: int, cout: int, num_classes: int | None, out_bias: bool = True):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(cin, num_classes)
        self.conv1 = _conv(cin, cout, 3, _RESIDUAL_GAIN, bias=False)  # feeds bn2 only
        self.bn2 = ConditionalBatchNorm2d(cout, num_classes)
        self.conv2 = _conv(cout, cout, 3, _RESIDUAL_GAIN, bias=out_bias)
        self.shortcut = _conv(cin, cout, 1, 1.0, bias=out_bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class SNGANGenerator(nn.Module):
    """SNGAN ResNet generator (Miyato et al. 2018): linear z -> s0 x s0 x base_width, ``n`` up-sampling
    residual blocks of ``base_width`` channels, BN, ReLU, conv3x3 -> C, tanh. With ``num_classes`` the
    blocks' batch norms are class-conditional (Miyato & Koyama 2018); the final batch norm is not.

    ``forward(z, y=None)`` maps z of shape (B, latent_dim) (and, iff ``num_classes`` is set, class ids y of
    shape (B,)) to images of shape (B, *image_shape) in [-1, 1]."""

    def __init__(self, latent_dim: int = 128, image_shape: Sequence[int] = (3, 32, 32), base_width: int = 256,
                 num_classes: int | None = None):
        super().__init__()
        c, _, s0, n = _plan(image_shape)
        self.latent_dim = _check_width("latent_dim", latent_dim)
        width = _check_width("base_width", base_width)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.num_classes = _check_num_classes(num_classes)
        self.s0, self.width = s0, width
        self.project = _make(nn.Linear(self.latent_dim, width * s0 * s0), 1.0, sn=False)
        # the last block feeds only the final batch norm, so its output biases would be cancelled
        self.blocks = nn.ModuleList(
            _GeneratorBlock(width, width, self.num_classes, out_bias=i < n - 1) for i in range(n)
        )
        self.bn = nn.BatchNorm2d(width)
        self.out = _conv(width, c, 3, 1.0)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"SNGANGenerator: z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        _check_labels("SNGANGenerator", self.num_classes, y, z.shape[0])
        h = self.project(z).view(z.shape[0], self.width, self.s0, self.s0)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class _OptimizedBlock(nn.Module):
    """The discriminator's first block: conv3x3, ReLU, conv3x3, 2x2 avg-pool; shortcut avg-pool, conv1x1."""

    def __init__(self, cin: int, cout: int, sn: bool):
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, _RESIDUAL_GAIN, sn)
        self.conv2 = _conv(cout, cout, 3, _RESIDUAL_GAIN, sn)
        self.shortcut = _conv(cin, cout, 1, 1.0, sn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class _DiscriminatorBlock(nn.Module):
    """ReLU, conv3x3, ReLU, conv3x3, [avg-pool]; shortcut conv1x1 then [avg-pool] when the block
    down-samples or changes width, else the identity."""

    def __init__(self, cin: int, cout: int, downsample: bool, sn: bool):
        super().__init__()
        self.downsample = downsample
        self.conv1 = _conv(cin, cout, 3, _RESIDUAL_GAIN, sn)
        self.conv2 = _conv(cout, cout, 3, _RESIDUAL_GAIN, sn)
        self.shortcut = _conv(cin, cout, 1, 1.0, sn) if downsample or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        s = x if self.shortcut is None else self.shortcut(x)
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class SNGANDiscriminator(nn.Module):
    """SNGAN ResNet discriminator (Miyato et al. 2018): an optimized down-sampling block, more residual
    blocks of ``base_width`` channels (down-sampling while the side exceeds 8, then two that keep it),
    ReLU, global sum pooling to phi(x), and a linear layer to one logit. With ``num_classes`` the logit
    gains the projection term <embed(y), phi(x)> (Miyato & Koyama 2018). ``spectral_norm`` wraps every
    convolution, the linear layer and the embedding.

    ``forward(x, y=None)`` returns logits of shape (B,); class ids y (B,) are required iff ``num_classes``
    is set."""

    def __init__(self, image_shape: Sequence[int] = (3, 32, 32), base_width: int = 128,
                 num_classes: int | None = None, spectral_norm: bool = True):
        super().__init__()
        c, h, _, _ = _plan(image_shape)
        width = _check_width("base_width", base_width)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.num_classes = _check_num_classes(num_classes)
        sn = bool(spectral_norm)
        side, downs = h // 2, 1  # the optimized block always halves the side
        while side > 8 and side % 2 == 0:
            side //= 2
            downs += 1
        self.feature_side = side
        blocks: list[nn.Module] = [_OptimizedBlock(c, width, sn)]
        blocks += [_DiscriminatorBlock(width, width, downsample=True, sn=sn) for _ in range(downs - 1)]
        blocks += [_DiscriminatorBlock(width, width, downsample=False, sn=sn) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.linear = _make(nn.Linear(width, 1), 1.0, sn)
        self.embed = _make(nn.Embedding(self.num_classes, width), 1.0, sn) if self.num_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): the blocks' output after ReLU, summed over space, shape (B, base_width)."""
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"SNGANDiscriminator: x must have shape (B, *{self.image_shape}), got {tuple(x.shape)}")
        _check_labels("SNGANDiscriminator", self.num_classes, y, x.shape[0])
        phi = self.features(x)
        logit = self.linear(phi).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(y) * phi).sum(dim=1)
        return logit
