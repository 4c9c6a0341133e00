"""Supervised semantic segmentation: one network, one loss (:class:`~src.models.base.TrainingModule`).

The segmenter's optimizer comes from the ``optimizer`` config group (src/optim/factory.py) like every
other model's: any per-player optimizer (SGD, Adam, nonlinear CG, ...) works, with its scheduler stepped
once per iteration. The poly schedule of DeepLab / Hung et al. 2018, lr_t = lr_0 (1 - t/T)^0.9, is the optimizer
group's ``scheduler: {_target_: torch.optim.lr_scheduler.PolynomialLR, _partial_: true, total_iters: T,
power: 0.9}`` (conf/optimizer/sgd_poly.yaml). ``head_lr_mult`` trains the network's
``head_parameters()`` at that multiple of the learning rate (10 in Hung et al.; the factory scales the
head's param group, so the schedule scales both groups alike). Joint game optimizers (CGD, ...) need two
players and are refused by the factory.

Validation (:class:`SegmentationEvaluation`, shared with the adversarial hybrid) runs whole-image or
sliding-window inference and logs dataset-level ``val/mIoU``, ``val/mAcc``, ``val/aAcc`` and
``val/IoU_<class>`` (src/metrics/segmentation.py), plus ``val/loss``.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.losses.segmentation import get_segmentation_loss
from src.metrics.segmentation import SegmentationMetrics
from src.models.base import TrainingModule
from src.utils.errors import ConfigError
from src.utils.schema import choose, require

log = logging.getLogger(__name__)

INFERENCE = ("whole", "slide")


def _pair(value, key: str) -> tuple[int, int]:
    if value is None:
        raise ConfigError(f"{key}: required for sliding-window inference")
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    require(len(value) == 2 and min(value) >= 1, key, f"must be an integer or [h, w] of positive integers, got {value}")
    return value  # type: ignore[return-value]


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering [0, size): every `stride`, plus one flush with the end."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def slide_inference(net: nn.Module, x: Tensor, window: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Logits (B, K, H, W) averaged over overlapping windows (images smaller than a window are zero-padded,
    i.e. padded with the normalised mean)."""
    _, _, h, w = x.shape
    wh, ww = window
    ph, pw = max(wh - h, 0), max(ww - w, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    hp, wp = x.shape[-2:]
    out: Tensor | None = None
    count = torch.zeros(1, 1, hp, wp, device=x.device, dtype=x.dtype)
    for y0 in _starts(hp, wh, stride[0]):
        for x0 in _starts(wp, ww, stride[1]):
            logits = net(x[..., y0:y0 + wh, x0:x0 + ww])
            if out is None:
                out = torch.zeros(x.shape[0], logits.shape[1], hp, wp, device=x.device, dtype=logits.dtype)
            out[..., y0:y0 + wh, x0:x0 + ww] += logits
            count[..., y0:y0 + wh, x0:x0 + ww] += 1
    assert out is not None
    return (out / count)[..., :h, :w]


def split_batch(batch) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None]:
    """(labeled (x, y), unlabeled (x, y_diagnostic) or None) from a plain (x, y) batch or the
    {"labeled": ..., "unlabeled": ...} batch of a semi-supervised data module."""
    if isinstance(batch, Mapping):
        labeled = batch["labeled"]
        unlabeled = batch.get("unlabeled")
        return (labeled[0], labeled[1]), (None if unlabeled is None else (unlabeled[0], unlabeled[1]))
    return (batch[0], batch[1]), None


class SegmentationEvaluation:
    """Evaluation shared by the segmentation models: inference, loss, dataset-level metrics, on the
    validation split (``val/...``, for choosing) and, when a run asks for it (``test_after_fit``), on the
    test split (``test/...``, for reporting). Host classes set ``self.segmenter`` and call
    :meth:`_init_evaluation` in ``__init__``."""

    segmenter: nn.Module
    metric_modes: dict[str, str]
    STAGES = ("val", "test")

    def _init_evaluation(self, num_classes: int, ignore_index: int, class_names: Sequence[str] | None,
                         inference: str, window, stride) -> None:
        require(int(num_classes) >= 2, "model.num_classes", f"must be >= 2, got {num_classes}")
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.inference = choose(inference, INFERENCE, "model.inference")
        if self.inference == "slide":
            self.window = _pair(window, "model.window")
            self.stride = _pair(stride if stride is not None else window, "model.stride")
        else:
            self.window = self.stride = None
        self.class_names = list(class_names) if class_names is not None else None
        self.val_metrics = SegmentationMetrics(self.num_classes, self.ignore_index, class_names=self.class_names)
        self.test_metrics = SegmentationMetrics(self.num_classes, self.ignore_index, class_names=self.class_names)

    data_kinds = ("segmentation",)

    @property
    def headline_metrics(self) -> list[str]:
        return [f"{stage}/{k}" for stage in self.STAGES for k in self.val_metrics.headline]

    def infer(self, x: Tensor) -> Tensor:
        """Logits (B, K, H, W) at the input resolution, whole image or sliding window."""
        if self.inference == "slide":
            return slide_inference(self.segmenter, x, self.window, self.stride)
        return self.segmenter(x)

    def split_metrics(self, stage: str) -> SegmentationMetrics:
        return self.test_metrics if stage == "test" else self.val_metrics

    def _evaluation_start(self, stage: str) -> None:
        metrics = self.split_metrics(stage)
        metrics.reset()
        if self.class_names is None:
            names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None)
            if names is not None and len(names) == self.num_classes:
                metrics.set_class_names(names)
        self.metric_modes.update({f"{stage}/{k}": v for k, v in metrics.modes.items()})

    def _evaluation_step(self, stage: str, batch) -> None:
        (x, y), _ = split_batch(batch)
        logits = self.infer(x)
        self.log(f"{stage}/loss", self.loss_fn(logits, y), on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self.split_metrics(stage).update(logits.argmax(1), y)
        self._evaluation_extra(stage, x, y, logits)

    def _evaluation_extra(self, stage: str, x: Tensor, y: Tensor, logits: Tensor) -> None:
        pass

    def _evaluation_end(self, stage: str) -> None:
        scores = self.split_metrics(stage).compute()
        self.log_dict({f"{stage}/{k}": v for k, v in scores.items()}, on_epoch=True, sync_dist=False)

    def on_validation_epoch_start(self) -> None:
        self._evaluation_start("val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._evaluation_end("val")
        super().on_validation_epoch_end()

    def on_test_epoch_start(self) -> None:
        self._evaluation_start("test")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._evaluation_end("test")
        super().on_test_epoch_end()

    @torch.no_grad()
    def overlay_outputs(self, x: Tensor) -> dict[str, Tensor | None]:
        """For pictures: predicted labels (B, H, W) and, where the model has one, a confidence map."""
        return {"pred": self.infer(x).argmax(1), "confidence": None}


class Segmentation(SegmentationEvaluation, TrainingModule):
    def __init__(
        self,
        segmenter: nn.Module,
        num_classes: int,
        optimizer=None,
        ignore_index: int = 255,
        loss: str = "ce",
        loss_options: Mapping | None = None,
        aux_weight: float = 0.4,
        head_lr_mult: float = 1.0,
        inference: str = "whole",
        window: Sequence[int] | int | None = None,
        stride: Sequence[int] | int | None = None,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
        monitor: Mapping | None = None,
    ):
        super().__init__(optimizer=optimizer, seed=seed, monitor=monitor)
        require(head_lr_mult > 0, "model.head_lr_mult", f"must be > 0, got {head_lr_mult}")
        require(aux_weight >= 0, "model.aux_weight", f"must be >= 0, got {aux_weight}")
        seg_classes = getattr(segmenter, "num_classes", num_classes)
        require(seg_classes == num_classes, "model.num_classes",
                f"{num_classes} differs from the segmenter's num_classes {seg_classes}")
        self.segmenter = segmenter
        self.loss_fn = get_segmentation_loss(loss, ignore_index, **dict(loss_options or {}))
        self.aux_weight, self.head_lr_mult = float(aux_weight), float(head_lr_mult)
        self._init_evaluation(num_classes, ignore_index, class_names, inference, window, stride)
        self.metric_modes["train/pixel_acc"] = "max"
        self._warned_unlabeled = False

    @property
    def players(self) -> dict[str, nn.Module]:
        return {"segmenter": self.segmenter}

    def player_param_groups(self) -> dict[str, list[dict]]:
        return head_param_groups("segmenter", self.segmenter, self.head_lr_mult)

    def forward(self, x: Tensor) -> Tensor:
        return self.infer(x)

    def train_iteration(self, batch) -> None:
        (x, y), unlabeled = split_batch(batch)
        if unlabeled is not None and not self._warned_unlabeled:
            log.warning("Segmentation is supervised: the unlabeled batches are not used (set dataset.unlabeled=false)")
            self._warned_unlabeled = True
        mean = self.pixel_mean
        if hasattr(self.segmenter, "forward_with_aux") and self.aux_weight > 0:
            outs = self.segmenter.forward_with_aux(x)
            logits = outs["out"]
            loss = self.loss_fn(logits, y, mean=mean)
            if "aux" in outs:
                loss = loss + self.aux_weight * self.loss_fn(outs["aux"], y, mean=mean)
        else:
            logits = self.segmenter(x)
            loss = self.loss_fn(logits, y, mean=mean)
        self.update("segmenter", loss)
        self.record(loss=loss)
        if self.logging_now:
            self.record(pixel_acc=pixel_accuracy(logits.detach(), y, self.ignore_index))


def pixel_accuracy(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    valid = target != ignore_index
    if not bool(valid.any()):
        return torch.tensor(float("nan"), device=logits.device)
    return (logits.argmax(1) == target)[valid].float().mean()


def head_param_groups(name: str, net: nn.Module, head_lr_mult: float) -> dict[str, list[dict]]:
    """{name: [backbone group, head group at head_lr_mult]} if the net splits its parameters and the
    multiplier is not 1, else {} (one group)."""
    if head_lr_mult == 1.0:
        return {}
    if not hasattr(net, "head_parameters"):
        raise ConfigError(f"model.head_lr_mult={head_lr_mult}: {type(net).__name__} has no head_parameters(); "
                          "set model.head_lr_mult=1")
    head = list(net.head_parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in net.parameters() if id(p) not in head_ids]
    return {name: [{"params": backbone, "lr_mult": 1.0}, {"params": head, "lr_mult": head_lr_mult, "group": "head"}]}
