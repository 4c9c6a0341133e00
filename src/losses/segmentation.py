"""Per-pixel segmentation losses on logits (B, K, H, W) and integer masks (B, H, W), all ignore-aware:
pixels labelled ``ignore_index`` (255, VOC/Cityscapes convention) contribute nothing, neither to the
value nor to the gradient, and averages are over the pixels that are not ignored.

* ``ce``: cross-entropy (optionally class-weighted; the weighted mean divides by the summed weights
  of the valid pixels, as ``torch.nn.functional.cross_entropy`` does).
* ``dice``: soft Dice loss on softmax probabilities, 1 - mean over classes of
  (2 |P n Y| + eps) / (|P| + |Y| + eps) (Milletari, Navab & Ahmadi 2016, "V-Net").
* ``focal``: -(1 - p_t)^gamma log p_t, optionally weighted by alpha_t (Lin, Goyal, Girshick, He &
  Dollar 2017, "Focal Loss for Dense Object Detection").
* ``ce_dice``: ce + dice.

A batch in which every pixel is ignored gives a loss of exactly 0 (connected to the graph, so backward
works) instead of the NaN of an empty mean. ``ce`` and ``focal`` take the averaging as ``mean`` (default:
over this process's pixels; models pass src.losses.reduction.global_mean in training so that DDP
reproduces one process on the global batch). ``dice`` is a ratio of batch sums and stays per process.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from src.losses.reduction import Mean, local_mean
from src.utils.errors import ConfigError
from src.utils.schema import choose

IGNORE_INDEX = 255


def _check(logits: Tensor, target: Tensor) -> None:
    if (logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0]
            or logits.shape[2:] != target.shape[1:]):
        raise ValueError(f"expected logits (B, K, H, W) and target (B, H, W) of the same B, H, W; got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")


def _zero(logits: Tensor) -> Tensor:
    return logits.sum() * 0.0


def valid_mask(target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    return target != ignore_index


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX,
                  weight: Tensor | None = None, label_smoothing: float = 0.0, mean: Mean = local_mean) -> Tensor:
    """Mean cross-entropy over the pixels that are not ignored (weighted: divided by their summed weights)."""
    _check(logits, target)
    valid = valid_mask(target, ignore_index)
    total = F.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore_index,
                            label_smoothing=label_smoothing, reduction="sum")
    if weight is None:
        count = valid.sum().to(logits.dtype)
    else:
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        count = (weight.to(logits.dtype)[safe] * valid).sum()
    return mean(total, count)


def one_hot(target: Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX, dtype=torch.float32) -> Tensor:
    """(B, H, W) labels -> (B, K, H, W) one-hot; an ignored pixel is the zero vector."""
    valid = valid_mask(target, ignore_index)
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    if bool((safe >= num_classes).any()) or bool((safe < 0).any()):
        bad = sorted(set(target[valid & ((safe >= num_classes) | (safe < 0))].unique().tolist()))
        raise ValueError(f"labels {bad} outside 0..{num_classes - 1} (and not the ignore index {ignore_index})")
    out = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(dtype)
    return out * valid.unsqueeze(1).to(dtype)


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> Tensor:
    """Soft Dice loss over the non-ignored pixels of the batch, averaged over classes."""
    _check(logits, target)
    valid = valid_mask(target, ignore_index).unsqueeze(1).to(logits.dtype)
    if not bool(valid.any()):
        return _zero(logits)
    probs = logits.softmax(dim=1) * valid
    onehot = one_hot(target, logits.shape[1], ignore_index, logits.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def focal_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, gamma: float = 2.0,
               alpha: Sequence[float] | Tensor | None = None, mean: Mean = local_mean) -> Tensor:
    """Mean focal loss over the non-ignored pixels; `alpha` is an optional per-class weight."""
    _check(logits, target)
    valid = valid_mask(target, ignore_index)
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    log_p = logits.log_softmax(dim=1)
    log_pt = log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    pt = log_pt.exp()
    loss = -((1 - pt).clamp_min(0) ** gamma) * log_pt
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        loss = loss * a[safe]
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return mean(loss.sum(), valid.sum().to(loss.dtype))


class SegmentationLoss:
    """A named loss with its options bound: ``loss(logits, target)``."""

    def __init__(self, name: str, fn: Callable[..., Tensor], ignore_index: int, **options):
        import inspect

        self.name, self.fn, self.ignore_index, self.options = name, fn, ignore_index, options
        self.takes_mean = "mean" in inspect.signature(fn).parameters

    def __call__(self, logits: Tensor, target: Tensor, mean: Mean = local_mean) -> Tensor:
        """The loss; `mean` averages the pixel sums (ignored by dice, a ratio of batch sums)."""
        extra = {"mean": mean} if self.takes_mean else {}
        return self.fn(logits, target, ignore_index=self.ignore_index, **self.options, **extra)

    def __repr__(self) -> str:
        return f"SegmentationLoss({self.name!r}, ignore_index={self.ignore_index}, {self.options})"


def _ce_dice(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, mean: Mean = local_mean,
             **options) -> Tensor:
    return cross_entropy(logits, target, ignore_index, mean=mean) + dice_loss(logits, target, ignore_index, **options)


LOSSES: dict[str, Callable[..., Tensor]] = {
    "ce": cross_entropy,
    "dice": dice_loss,
    "focal": focal_loss,
    "ce_dice": _ce_dice,
}


def get_segmentation_loss(name: str, ignore_index: int = IGNORE_INDEX, key: str = "model.loss",
                          **options) -> SegmentationLoss:
    """The loss `name` (ce | dice | focal | ce_dice) with its options (e.g. gamma for focal); a
    ConfigError names `key` for an unknown loss or option."""
    fn = LOSSES[choose(name, LOSSES, key)]
    import inspect

    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if (k not in params and not accepts_any) or k == "mean"]
    if unknown:
        allowed = [k for k in params if k not in ("logits", "target", "ignore_index", "mean")]
        raise ConfigError(f"{key}: the {name!r} loss has no option(s) {unknown}; options: {allowed}")
    return SegmentationLoss(name, fn, ignore_index, **options)
