"""Dataset-level semantic segmentation metrics, VOC / mmsegmentation conventions.

One K x K confusion matrix (rows: ground truth, columns: prediction) is accumulated over the whole
validation set (summed across processes under DDP); pixels labelled ``ignore_index`` (255) are left
out. From it, for class c with TP_c = M[c, c], GT_c = sum_j M[c, j], P_c = sum_i M[i, c]:

* IoU_c = TP_c / (GT_c + P_c - TP_c); a class absent from both prediction and target (union 0) has no
  IoU and is left out of the mean: mIoU = nanmean_c IoU_c (Everingham et al. 2010, PASCAL VOC);
* Acc_c = TP_c / GT_c, mAcc = nanmean_c Acc_c over the classes present in the target (mmseg);
* aAcc = sum_c TP_c / sum M (overall pixel accuracy).

This equals torchmetrics' ``MulticlassJaccardIndex(num_classes=K, ignore_index=255, average="macro")``
accumulated over the dataset; it is *not* ``torchmetrics.segmentation.MeanIoU`` (a per-image mean with
no ignore index).

:class:`ConfidenceAccuracy` measures pseudo-labels against a confidence map (Hung et al. 2018): the
fraction of pixels whose confidence exceeds a threshold and the accuracy of the argmax labels above vs
below it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

IGNORE_INDEX = 255


def scores_from_confusion(confmat: Tensor) -> dict[str, Tensor]:
    """mIoU, mAcc, aAcc and per-class IoU / Acc (NaN where undefined) from a (K, K) confusion matrix."""
    m = confmat.double()
    tp = m.diagonal()
    gt, pred = m.sum(1), m.sum(0)
    union = gt + pred - tp
    nan = torch.full_like(tp, float("nan"))
    iou = torch.where(union > 0, tp / union.clamp_min(1), nan)
    acc = torch.where(gt > 0, tp / gt.clamp_min(1), nan)
    total = m.sum()
    aacc = tp.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=m.dtype)
    return {"mIoU": iou.nanmean().float(), "mAcc": acc.nanmean().float(), "aAcc": aacc.float(),
            "IoU": iou.float(), "Acc": acc.float()}


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))


class SegmentationMetrics(MulticlassConfusionMatrix):
    """A dataset-level confusion matrix whose ``compute()`` gives a dict of scalars:
    ``mIoU, mAcc, aAcc`` and ``IoU_<class name>`` for every class present in prediction or target.

    ``update(preds, target)``: preds are labels (B, H, W) or logits/probabilities (B, K, H, W) (argmax
    taken), target labels (B, H, W) with ``ignore_index`` for pixels to leave out.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX,
                 class_names: Sequence[str] | None = None, validate_args: bool = False, **kwargs):
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, normalize=None,
                         validate_args=validate_args, **kwargs)
        self.set_class_names(class_names)

    def set_class_names(self, class_names: Sequence[str] | None) -> None:
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        self.class_names = [_safe_name(n) for n in names]

    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=1)
        bad = (target != self.ignore_index) & ((target < 0) | (target >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"target labels {sorted(target[bad].unique().tolist())[:10]} are outside 0..{self.num_classes - 1} "
                f"and not the ignore index {self.ignore_index} (masks stored as 0/255, or Cityscapes labelIds "
                "instead of trainIds?)")
        super().update(preds.long(), target.long())

    headline = ("mIoU", "mAcc", "aAcc")  # the keys an end-of-run table shows

    @property
    def modes(self) -> dict[str, str]:
        """Direction of each key compute() returns: every score is better high."""
        return {k: "max" for k in ("mIoU", "mAcc", "aAcc", *(f"IoU_{n}" for n in self.class_names))}

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        scores = scores_from_confusion(self.confmat)
        out = {"mIoU": scores["mIoU"], "mAcc": scores["mAcc"], "aAcc": scores["aAcc"]}
        for name, value in zip(self.class_names, scores["IoU"]):
            if torch.isfinite(value):
                out[f"IoU_{name}"] = value
        return out

    def confusion(self) -> Tensor:
        return self.confmat.clone()


class ConfidenceAccuracy(Metric):
    """Accuracy of predicted labels split by a per-pixel confidence threshold.

    ``update(pred_labels, target, confidence)`` with confidence in [0, 1] (B, H, W). Pixels whose
    target is ``ignore_index`` count toward ``fraction_above`` (the share of all pixels above the
    threshold, what a semi-supervised loss would train on) but not toward the accuracies.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float, ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.ignore_index = float(threshold), ignore_index
        for name in ("pixels", "above", "correct_above", "labelled_above", "correct_below", "labelled_below"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, confidence: Tensor) -> None:  # type: ignore[override]
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=1)
        above = confidence > self.threshold
        valid = target != self.ignore_index
        correct = (preds == target) & valid
        self.pixels += above.numel()
        self.above += above.sum()
        self.correct_above += (correct & above).sum()
        self.labelled_above += (valid & above).sum()
        self.correct_below += (correct & ~above).sum()
        self.labelled_below += (valid & ~above).sum()

    def compute(self) -> dict[str, Tensor]:
        def ratio(a, b):
            return (a / b).float() if b > 0 else torch.tensor(float("nan"))

        return {"fraction_above": ratio(self.above, self.pixels),
                "acc_above": ratio(self.correct_above, self.labelled_above),
                "acc_below": ratio(self.correct_below, self.labelled_below),
                "acc": ratio(self.correct_above + self.correct_below, self.labelled_above + self.labelled_below)}
