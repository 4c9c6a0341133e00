"""Segmentation losses: ignore-aware values and gradients, the registry."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from src.losses.segmentation import (LOSSES, cross_entropy, dice_loss, focal_loss, get_segmentation_loss,
                                     one_hot)
from src.utils.errors import ConfigError


def _data(seed=0, k=4):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, k, 5, 6, generator=g)
    target = torch.randint(0, k, (2, 5, 6), generator=g)
    target[0, 0, :3] = 255
    target[1, 4, 5] = 255
    return logits, target


def test_cross_entropy_averages_over_non_ignored_pixels():
    logits, target = _data()
    valid = target != 255
    per_pixel = -logits.log_softmax(1).gather(1, target.clamp(max=3).unsqueeze(1)).squeeze(1)
    expected = per_pixel[valid].sum() / valid.sum()
    assert torch.allclose(cross_entropy(logits, target), expected, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ignored_pixels_get_no_gradient_and_do_not_change_the_value(name):
    logits, target = _data()
    logits.requires_grad_(True)
    loss = get_segmentation_loss(name)(logits, target)
    loss.backward()
    ignored = (target == 255).unsqueeze(1).expand_as(logits)
    assert torch.all(logits.grad[ignored] == 0)
    assert logits.grad[~ignored].abs().sum() > 0
    # changing an ignored pixel's logits changes nothing
    other = logits.detach().clone()
    other[ignored] = 100.0 * torch.randn(int(ignored.sum()))
    assert torch.allclose(get_segmentation_loss(name)(other, target), loss.detach(), atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_ignored_batch_gives_zero_not_nan(name):
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), 255)
    loss = get_segmentation_loss(name)(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, target = _data(1)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), cross_entropy(logits, target), atol=1e-6)
    assert focal_loss(logits, target, gamma=2.0) < cross_entropy(logits, target)


def test_dice_is_zero_for_a_perfect_prediction_and_one_hot_masks_ignored_pixels():
    _, target = _data(2)
    oh = one_hot(target, 4)
    assert torch.all(oh.sum(1)[target == 255] == 0) and torch.all(oh.sum(1)[target != 255] == 1)
    perfect = 50.0 * (oh * 2 - 1)
    assert dice_loss(perfect, target, eps=0.0) < 1e-4


def test_cross_entropy_matches_torch_with_class_weights():
    logits, target = _data(3)
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    assert torch.allclose(cross_entropy(logits, target, weight=w),
                          F.cross_entropy(logits, target, weight=w, ignore_index=255))


def test_unknown_loss_or_option_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="model.loss.*nope.*ce"):
        get_segmentation_loss("nope")
    with pytest.raises(ConfigError, match="gamma"):
        get_segmentation_loss("ce", gamma=2.0)
    assert math.isfinite(get_segmentation_loss("focal", gamma=1.0)(*_data()).item())


def test_labels_out_of_range_are_reported():
    with pytest.raises(ValueError, match="outside"):
        one_hot(torch.tensor([[[0, 7]]]), 4)
