"""Dataset-level segmentation metrics against a hand-computed confusion matrix (VOC/mmseg conventions)."""
from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from src.metrics.segmentation import ConfidenceAccuracy, SegmentationMetrics, scores_from_confusion

# 4 classes; class 2 appears in neither prediction nor target; 255 pixels ignored.
#   target: 0 0 0 1 1 3 3 255 255
#   pred:   0 0 1 1 1 3 0   2   0     (the two ignored pixels predict 2 and 0: must not count)
TARGET = torch.tensor([[0, 0, 0, 1, 1, 3, 3, 255, 255]])
PRED = torch.tensor([[0, 0, 1, 1, 1, 3, 0, 2, 0]])
# confusion (rows target, cols pred):
#   0: [2, 1, 0, 0]   1: [0, 2, 0, 0]   2: [0, 0, 0, 0]   3: [1, 0, 0, 1]
CONFMAT = torch.tensor([[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]])
IOU = [2 / (3 + 3 - 2), 2 / (2 + 3 - 2), float("nan"), 1 / (2 + 1 - 1)]  # 0.5, 2/3, absent, 0.5
ACC = [2 / 3, 1.0, float("nan"), 1 / 2]


def test_confusion_matrix_and_scores_match_the_hand_computation():
    m = SegmentationMetrics(4, class_names=["bg", "a", "b", "c"])
    m.update(PRED, TARGET)
    assert torch.equal(m.confusion(), CONFMAT)
    s = m.compute()
    present = [v for v in IOU if not math.isnan(v)]
    assert s["mIoU"].item() == pytest.approx(sum(present) / 3)  # absent class left out of the mean
    assert s["mAcc"].item() == pytest.approx((2 / 3 + 1 + 0.5) / 3)
    assert s["aAcc"].item() == pytest.approx(5 / 7)
    assert s["IoU_bg"].item() == pytest.approx(0.5) and s["IoU_a"].item() == pytest.approx(2 / 3)
    assert "IoU_b" not in s  # absent from prediction and target: no IoU
    full = scores_from_confusion(CONFMAT)
    assert math.isnan(full["IoU"][2]) and math.isnan(full["Acc"][2])


def test_logits_are_argmaxed_and_updates_accumulate_over_the_dataset():
    m = SegmentationMetrics(4)
    logits = torch.nn.functional.one_hot(PRED, 4).permute(0, 2, 1).float().unsqueeze(-1)  # (1, 4, 9, 1)
    m.update(logits, TARGET.unsqueeze(-1))
    m.update(PRED, TARGET)
    assert torch.equal(m.confusion(), 2 * CONFMAT)
    # dataset-level, not a mean of per-batch scores: two batches with different IoUs
    m2 = SegmentationMetrics(2)
    m2.update(torch.tensor([[0, 0, 0, 1]]), torch.tensor([[0, 0, 0, 0]]))   # class 1 only predicted
    m2.update(torch.tensor([[1]]), torch.tensor([[1]]))
    s = m2.compute()
    assert s["mIoU"].item() == pytest.approx((3 / 4 + 1 / 2) / 2)


def test_matches_torchmetrics_jaccard_macro_with_ignore_index():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 16, 16), generator=g)
    target[target == 4] = 255  # class 4 never in the target...
    pred = torch.randint(0, 4, (3, 16, 16), generator=g)  # ...nor in the prediction: absent
    ours = SegmentationMetrics(5)
    ours.update(pred, target)
    ref = MulticlassJaccardIndex(num_classes=5, ignore_index=255, average="macro")
    ref.update(pred, target)
    assert ours.compute()["mIoU"].item() == pytest.approx(ref.compute().item(), abs=1e-6)


def test_bad_labels_are_rejected_with_a_hint():
    m = SegmentationMetrics(3)
    with pytest.raises(ValueError, match="trainIds|0/255"):
        m.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 7]]))


def test_confidence_accuracy_splits_by_threshold():
    pred = torch.tensor([[0, 1, 1, 0, 2, 2]])
    target = torch.tensor([[0, 1, 0, 0, 255, 1]])
    conf = torch.tensor([[0.9, 0.8, 0.1, 0.3, 0.9, 0.05]])
    m = ConfidenceAccuracy(threshold=0.2)
    m.update(pred, target, conf)
    s = m.compute()
    # above: pixels 0, 1, 3, 4 (4 of 6); labelled above: 0, 1, 3 all correct; below: 2, 5 both wrong
    assert s["fraction_above"].item() == pytest.approx(4 / 6)
    assert s["acc_above"].item() == pytest.approx(1.0)
    assert s["acc_below"].item() == pytest.approx(0.0)
    assert s["acc"].item() == pytest.approx(3 / 5)
