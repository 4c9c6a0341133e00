"""A small U-Net (Ronneberger, Fischer & Brox 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation"): an encoder of `depth` downsamplings (two 3x3 conv + norm + ReLU per level, widths
base_width * 2^level), a symmetric decoder with skip connections and a 1x1 classifier.

Logits come out at the input resolution (B, K, H, W) for any H, W: the input is padded (reflect) up to a
multiple of 2^depth and the logits are cropped back. "Same" padding everywhere (unlike the paper's valid
convolutions), bilinear upsampling or transposed convolutions. ``downsample: f > 1`` runs the network on
the input resized by 1/f (area) and upsamples the logits bilinearly to the input size, like DeepLab's
output stride: f^2 times cheaper, for CPU budgets.

For a head learning-rate multiplier the parameters split into :meth:`backbone_parameters` (the
encoder) and :meth:`head_parameters` (decoder and classifier).

Pretrained encoders: ``pretrain: digits`` starts the encoder (stem and downsampling blocks) from
:class:`UNetClassifier`, the same encoder with a linear classifier, trained on single textured digits
(src/data/digit_crops.py, the scenes' training digits only) on first use and cached in ``cache_dir``
(src/networks/pretraining.py) -- the scenes analogue of ImageNet pretraining. ``backbone_weights_path``
loads the encoder from a local file instead: a :class:`UNetClassifier` state dict (e.g. the cached
``pretrain: digits`` file), or any state dict or Lightning checkpoint whose ``stem.*`` / ``down.*`` tensors
(after a prefix such as ``network.``) fit. The decoder keeps its own initialisation either way (drawn identically
with and without pretraining).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.utils.schema import choose, require


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
        )


ENCODER = ("stem", "down")  # the modules an encoder checkpoint provides


def _resized(x: Tensor, downsample: int) -> Tensor:
    if downsample == 1:
        return x
    size = x.shape[-2:]
    return F.interpolate(x, size=(max(1, round(size[0] / downsample)), max(1, round(size[1] / downsample))),
                         mode="area")


class UNetClassifier(nn.Module):
    """The U-Net's encoder (same module names: ``stem``, ``down``; same ``downsample``) with global average
    pooling and a linear classifier ``fc``: what ``pretrain: digits`` trains. ``forward(x)`` -> logits;
    ``features(x)`` the pooled deepest features."""

    def __init__(self, num_classes: int, in_channels: int = 3, base_width: int = 32, depth: int = 4,
                 norm: str = "batch", downsample: int = 1):
        super().__init__()
        choose(norm, ("batch", "group", "none"), "model.network.norm")
        self.num_classes, self.downsample = int(num_classes), int(downsample)
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0], norm)
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1], norm) for i in range(depth))
        self.feature_dim = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes)

    def features(self, x: Tensor) -> Tensor:
        y = self.stem(_resized(x, self.downsample))
        for block in self.down:
            y = block(F.max_pool2d(y, 2))
        return y.mean(dim=(2, 3))

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return f, self.fc(f)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


class UNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, base_width: int = 32, depth: int = 4,
                 norm: str = "batch", upsample: str = "bilinear", dropout: float = 0.0, downsample: int = 1,
                 pretrain: str | None = None, backbone_weights_path: str | None = None, cache_dir: str | None = None):
        super().__init__()
        choose(norm, ("batch", "group", "none"), "model.segmenter.norm")
        choose(upsample, ("bilinear", "transpose"), "model.segmenter.upsample")
        if depth < 1 or base_width < 1 or num_classes < 1 or int(downsample) < 1:
            raise ValueError(f"UNet needs depth, base_width, num_classes, downsample >= 1; got {depth}, {base_width}, "
                             f"{num_classes}, {downsample}")
        self.num_classes, self.depth, self.upsample_mode = num_classes, depth, upsample
        self.downsample = int(downsample)
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0], norm)
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1], norm) for i in range(depth))
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            if upsample == "transpose":
                self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            else:
                self.up.append(nn.Conv2d(widths[i + 1], widths[i], 1))
            self.dec.append(DoubleConv(2 * widths[i], widths[i], norm))
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        self.encoder_spec = {"in_channels": in_channels, "base_width": base_width, "depth": depth, "norm": norm,
                             "downsample": self.downsample}
        if pretrain is not None:
            from src.networks.pretraining import PRETRAINED_ENCODERS

            choose(pretrain, tuple(PRETRAINED_ENCODERS), "model.segmenter.pretrain")
            require(backbone_weights_path is None, "model.segmenter.backbone_weights_path",
                    "set either it or model.segmenter.pretrain, not both")
            self.load_encoder(PRETRAINED_ENCODERS[pretrain](self.encoder_spec, cache_dir), "model.segmenter.pretrain")
        if backbone_weights_path:
            from src.networks.segmentation import load_state_file

            key = "model.segmenter.backbone_weights_path"
            self.load_encoder(load_state_file(backbone_weights_path, key), key)

    def load_encoder(self, state: dict[str, Tensor], key: str) -> None:
        """Copy the encoder's tensors (``stem.*``, ``down.*``; prefixes such as a classifier run's
        ``network.`` stripped) from `state`; every encoder tensor must be there with its shape."""
        from src.networks.segmentation import load_matching

        loaded = load_matching(self, state, key, strip=("network.", "classifier."), only=ENCODER)
        expected = sum(1 for name in self.state_dict() if name.split(".")[0] in ENCODER)
        require(loaded == expected, key, f"holds {loaded} of the encoder's {expected} tensors with matching "
                f"names and shapes (an encoder of another width, depth or norm?)")

    def _up(self, i: int, x: Tensor) -> Tensor:
        if self.upsample_mode == "bilinear":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.up[i](x)

    def forward(self, x: Tensor) -> Tensor:
        if self.downsample > 1:
            logits = self._forward(_resized(x, self.downsample))
            return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if h > ph and w > pw else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = [self.stem(x)]
        for i, block in enumerate(self.down):
            skips.append(block(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for i, block in enumerate(self.dec):
            y = block(torch.cat([skips.pop(), self._up(i, y)], dim=1))
        return self.classifier(self.dropout(y))[..., :h, :w]

    # ------------------------------------------------------------------------- parameter groups
    def backbone_parameters(self):
        yield from self.stem.parameters()
        yield from self.down.parameters()

    def head_parameters(self):
        for module in (self.up, self.dec, self.classifier):
            yield from module.parameters()
