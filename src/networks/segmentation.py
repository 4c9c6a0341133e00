"""FCN and DeepLabv3 segmenters from ``torchvision.models.segmentation``, always built with
``weights=None, weights_backbone=None`` (nothing is ever downloaded):

* FCN (Long, Shelhamer & Darrell 2015, "Fully Convolutional Networks for Semantic Segmentation"),
  backbones resnet50 | resnet101;
* DeepLabv3 (Chen, Papandreou, Schroff & Adam 2017, "Rethinking Atrous Convolution for Semantic Image
  Segmentation"), backbones resnet50 | resnet101 | mobilenet_v3_large.

Pretrained weights come only from local files, read with ``torch.load(weights_only=True)``:
``weights_path`` (a whole segmentation model's state dict; tensors whose shape differs, e.g. a
21-class classifier, are skipped) or ``backbone_weights_path`` (an ImageNet classification state dict,
e.g. torchvision's ``resnet101-63fe2227.pth``, loaded into the backbone; ``fc.*`` is dropped). A path
that does not exist is a clear :class:`~src.utils.errors.ConfigError`.

The wrapper returns the logits tensor (B, K, H, W) at the input resolution for any H, W (torchvision
interpolates the head's output bilinearly to the input size). ``freeze_bn`` keeps every BatchNorm in
eval mode with fixed affine parameters (DeepLab practice with pretrained backbones; it also makes batch
size 1 safe, which DeepLabv3's image-pooling branch otherwise refuses in training mode).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import torch
import torchvision.models.segmentation as tvseg
from torch import Tensor, nn

from src.utils.errors import ConfigError
from src.utils.schema import choose

log = logging.getLogger(__name__)

BUILDERS = {
    "fcn": {"resnet50": tvseg.fcn_resnet50, "resnet101": tvseg.fcn_resnet101},
    "deeplabv3": {"resnet50": tvseg.deeplabv3_resnet50, "resnet101": tvseg.deeplabv3_resnet101,
                  "mobilenet_v3_large": tvseg.deeplabv3_mobilenet_v3_large},
}
_PREFIXES = ("module.", "model.", "segmenter.", "net.")


def load_state_file(path: str | Path, key: str) -> dict[str, Tensor]:
    """A state dict from a local file (weights only); unwraps {"state_dict": ...} / {"model": ...}."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}: no weights file at {p} (pretrained weights are never downloaded; "
                          "put the .pth file there or set it to null)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is the user's file
        raise ConfigError(f"{key}: {p} is not a weights-only PyTorch state dict ({err})") from err
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{key}: {p} does not hold a state dict of tensors")
    return state


def load_matching(module: nn.Module, state: dict[str, Tensor], key: str, strip: tuple[str, ...] = (),
                  only: tuple[str, ...] = ()) -> int:
    """Copy the tensors whose (prefix-stripped) name and shape match, and whose first name part is in
    `only` when given; returns how many. Raises if none."""
    own = module.state_dict()
    picked = {}
    for name, value in state.items():
        for prefix in _PREFIXES + strip:
            if name.startswith(prefix) and name not in own:
                name = name[len(prefix):]
        if only and name.split(".")[0] not in only:
            continue
        if name in own and own[name].shape == value.shape:
            picked[name] = value
    if not picked:
        raise ConfigError(f"{key}: no tensor of the file matches the network (wrong architecture?)")
    module.load_state_dict(picked, strict=False)
    skipped = len(own) - len(picked)
    log.info("%s: loaded %d tensors, %d left at their initialisation", key, len(picked), skipped)
    return len(picked)


class TorchvisionSegmenter(nn.Module):
    """``arch`` fcn | deeplabv3 with a ``backbone`` torchvision offers for it."""

    def __init__(self, num_classes: int, arch: str = "deeplabv3", backbone: str = "resnet50",
                 aux_loss: bool = False, weights_path: str | None = None, backbone_weights_path: str | None = None,
                 freeze_bn: bool = False, in_channels: int = 3):
        super().__init__()
        choose(arch, BUILDERS, "model.segmenter.arch")
        choose(backbone, BUILDERS[arch], "model.segmenter.backbone")
        if in_channels != 3:
            raise ConfigError(f"model.segmenter.in_channels: torchvision's {arch} backbones take 3 channels, "
                              f"got {in_channels}")
        self.arch, self.backbone_name, self.num_classes = arch, backbone, num_classes
        self.net = BUILDERS[arch][backbone](weights=None, weights_backbone=None, num_classes=num_classes,
                                            aux_loss=aux_loss)
        if backbone_weights_path:
            state = load_state_file(backbone_weights_path, "model.segmenter.backbone_weights_path")
            state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
            load_matching(self.net.backbone, state, "model.segmenter.backbone_weights_path",
                          strip=("backbone.", "features."))
        if weights_path:
            load_matching(self.net, load_state_file(weights_path, "model.segmenter.weights_path"),
                          "model.segmenter.weights_path")
        self.freeze_bn = freeze_bn
        if freeze_bn and not (backbone_weights_path or weights_path):
            log.warning("model.segmenter.freeze_bn=true without pretrained weights (backbone_weights_path / "
                        "weights_path, e.g. RESNET101_WEIGHTS in .env for the VOC presets): BatchNorm stays at its "
                        "initial statistics while the network trains from scratch")
        if freeze_bn:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters():
                        p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)["out"]

    def forward_with_aux(self, x: Tensor) -> dict[str, Tensor]:
        """{"out": logits, "aux": auxiliary logits (if aux_loss)} at the input resolution."""
        return dict(self.net(x))

    # ------------------------------------------------------------------------- parameter groups
    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.net.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.net.classifier.parameters()
        if getattr(self.net, "aux_classifier", None) is not None:
            yield from self.net.aux_classifier.parameters()


def FCN(num_classes: int, backbone: str = "resnet50", **kwargs) -> TorchvisionSegmenter:  # noqa: N802
    return TorchvisionSegmenter(num_classes, arch="fcn", backbone=backbone, **kwargs)


def DeepLabV3(num_classes: int, backbone: str = "resnet50", **kwargs) -> TorchvisionSegmenter:  # noqa: N802
    return TorchvisionSegmenter(num_classes, arch="deeplabv3", backbone=backbone, **kwargs)
