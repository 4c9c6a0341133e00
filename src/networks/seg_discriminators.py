"""Discriminators for adversarial semantic segmentation.

:class:`LucDiscriminator` - Luc, Couprie, Chintala & Verbeek 2016, "Semantic Segmentation using
Adversarial Networks" (arXiv 1611.08408): an image-level discriminator a(x, y) that outputs one logit
per image (is the label map y the ground truth for image x, or the segmenter's prediction?). The label
map is presented in one of three ways (``variant``):

* ``basic``: the class probability maps (C channels) - one-hot ground truth or softmax prediction;
* ``product``: each class map multiplied by each of the R, G, B channels of the image (3C channels);
* ``scaling``: the ground truth is softened with the prediction s so that it is not trivially one-hot
  (see :func:`luc_scaling`); predictions are presented as they are.

For ``basic`` and ``scaling`` the image and the label map go through separate first convolutions whose
features are concatenated (the paper's two-branch design); ``product`` already mixes them and has one
branch. A stack of strided convolutions then reduces to a global average and one linear logit.

:class:`HungDiscriminator` - Hung, Tsai, Liou, Lin & Yang 2018, "Adversarial Learning for
Semi-Supervised Semantic Segmentation" (BMVC, arXiv 1802.07934): fully convolutional, five 4x4 stride-2
convolutions C -> 64 -> 128 -> 256 -> 512 -> 1 (LeakyReLU 0.2 after all but the last), the logit map
upsampled bilinearly to the input size: one real/fake logit per pixel, the confidence map used for
semi-supervised self-training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.utils.schema import choose

LUC_VARIANTS = ("basic", "product", "scaling")


def luc_scaling(onehot: Tensor, probs: Tensor, tau: float = 0.9, eps: float = 1e-6) -> Tensor:
    """Luc et al.'s "scaling" encoding of the ground truth (B, C, H, W) given the prediction s:
    with l the true class at a pixel, ybar_l = max(tau, s_l) and ybar_c = s_c (1 - ybar_l) / (1 - s_l)
    for c != l, so the vector still sums to 1 and is close to s where s is already confident.
    Pixels whose one-hot vector is all zero (ignored) stay zero."""
    labelled = onehot.sum(1, keepdim=True) > 0
    s_l = (probs * onehot).sum(1, keepdim=True)
    ybar_l = torch.clamp(s_l, min=tau)
    others = probs * (1 - ybar_l) / (1 - s_l).clamp_min(eps)
    out = onehot * ybar_l + (1 - onehot) * others
    return torch.where(labelled, out, torch.zeros_like(out))


class LucDiscriminator(nn.Module):
    def __init__(self, num_classes: int, variant: str = "basic", image_channels: int = 3, base_width: int = 64,
                 num_layers: int = 3, tau: float = 0.9):
        super().__init__()
        self.variant = choose(variant, LUC_VARIANTS, "model.discriminator.variant")
        if not 0.0 < tau < 1.0:
            raise ValueError(f"tau must lie in (0, 1), got {tau}")
        self.num_classes, self.image_channels, self.tau = num_classes, image_channels, float(tau)
        w = base_width
        if self.variant == "product":
            self.label_branch = nn.Sequential(nn.Conv2d(image_channels * num_classes, 2 * w, 5, padding=2),
                                              nn.ReLU(inplace=True))
            self.image_branch = None
        else:
            self.label_branch = nn.Sequential(nn.Conv2d(num_classes, w, 5, padding=2), nn.ReLU(inplace=True))
            self.image_branch = nn.Sequential(nn.Conv2d(image_channels, w, 5, padding=2), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = 2 * w
        for i in range(num_layers):
            cout = 2 * w * 2 ** (i + 1) if i < 2 else cin
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.trunk = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, 1)

    def encode(self, image: Tensor, labels: Tensor) -> Tensor:
        """The discriminator's label input for `labels` (B, C, H, W) next to `image`."""
        if self.variant == "product":
            return (labels.unsqueeze(2) * image.unsqueeze(1)).flatten(1, 2)  # (B, C*3, H, W)
        return labels

    def forward(self, image: Tensor, labels: Tensor) -> Tensor:
        """One logit per image, (B,). `labels` are probability maps (B, C, H, W) at the label resolution;
        the image is resized to it if it differs."""
        if image.shape[-2:] != labels.shape[-2:]:
            image = F.interpolate(image, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        h = self.label_branch(self.encode(image, labels))
        if self.image_branch is not None:
            h = torch.cat([self.image_branch(image), h], dim=1)
        h = self.trunk(h)
        return self.fc(h.mean(dim=(2, 3))).squeeze(1)


class HungDiscriminator(nn.Module):
    def __init__(self, num_classes: int, base_width: int = 64, num_layers: int = 5, negative_slope: float = 0.2):
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2, got {num_layers}")
        widths = [num_classes] + [base_width * 2**i for i in range(num_layers - 1)] + [1]
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            if i < num_layers - 1:
                layers.append(nn.LeakyReLU(negative_slope, inplace=True))
        self.net = nn.Sequential(*layers)
        self.num_classes, self.num_layers, self.min_size = num_classes, num_layers, 2**num_layers

    def forward(self, probs: Tensor) -> Tensor:
        """A logit map (B, 1, H, W) at the input size for probability maps (B, C, H, W)."""
        h, w = probs.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(f"HungDiscriminator with {self.num_layers} stride-2 layers needs inputs of "
                             f"at least {self.min_size}x{self.min_size}, got {h}x{w}")
        return F.interpolate(self.net(probs), size=(h, w), mode="bilinear", align_corners=False)
