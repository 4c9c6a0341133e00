"""Pretrained encoders the framework trains itself, offline: the scenes analogue of ImageNet pretraining.

``digits``: a :class:`src.networks.unet.UNetClassifier` (the segmenter's encoder with a linear classifier)
trained to classify single textured digits (src/data/digit_crops.py: the scenes' training digits only;
8,000 crops, batch 64, Adam 1e-3, 5 epochs, seed 0) with the framework's Classifier module, on first use,
and cached in ``<cache_dir>/backbones/`` by its recipe (the same machinery as the GAN metrics' backbones,
src/metrics/backbones.py): a process that finds it there only loads it.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from src.metrics.backbones import Preset, cached_preset_path, safe_load, trained_preset_file


#: the digit-crop data and epochs of ``digits`` (part of the cached file's recipe)
DIGITS_DATA = {"_target_": "src.data.digit_crops.DigitCropsDataModule", "num_train": 8000, "num_val": 1000,
               "batch_size": 64, "val_batch_size": 500}
DIGITS_EPOCHS = 5


def digits_encoder(spec: dict, cache_dir: str | None) -> dict[str, Tensor]:
    """The state dict of a UNetClassifier with the encoder `spec` (in_channels, base_width, depth, norm,
    downsample) trained on digit crops."""
    network = {"_target_": "src.networks.unet.UNetClassifier", "num_classes": 10, **spec}
    preset = Preset(datamodule=dict(DIGITS_DATA), network=network, num_classes=10, epochs=DIGITS_EPOCHS)
    name = "unet_digits"
    path = trained_preset_file(name, preset, cached_preset_path(name, preset, cache_dir),
                               purpose="segmenter pretraining")
    return safe_load(path, f"pretrained encoder {name}")["state_dict"]


#: pretrain name -> function(encoder spec, cache dir) -> state dict
PRETRAINED_ENCODERS: dict[str, Callable[[dict, str | None], dict[str, Tensor]]] = {"digits": digits_encoder}
