"""Image recognition: a supervised classifier, one network and one loss (:class:`~src.models.base.TrainingModule`).

The network's optimizer comes from the ``optimizer`` config group (src/optim/factory.py) like every other
model's (SGD, Adam, nonlinear CG, ...; a joint game optimizer needs two players and is refused).

Validation (:class:`ClassificationEvaluation`, shared with the semi-supervised GAN) logs ``val/loss``,
``val/acc`` (top-1 accuracy over the validation set) and ``val/acc_balanced`` (mean per-class recall), and
at the end of each validation saves the confusion matrix as ``<output_dir>/confusion/confusion_step<N>.png``
(rows: true class, normalised per row; the counts are written in the cells) and logs it as an image to
wandb / TensorBoard.

A trained classifier doubles as the feature extractor of the GAN quality metrics (penultimate features
for FID / KID, logits for IS; src/metrics/gan_quality.py): pass its checkpoint as the metric's
``checkpoint``.

Training batches are ``(x, y)`` or the ``{"labeled": (x, y), "unlabeled": ...}`` batches of a
semi-supervised data module (src/data/labeled.py), of which only the labeled part is used here.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from src.models.base import TrainingModule
from src.utils.schema import require

log = logging.getLogger(__name__)


def labeled_part(batch) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
    """((x, y) labeled, x unlabeled or None) from an (x, y) batch or a {"labeled", "unlabeled"} batch."""
    if isinstance(batch, Mapping):
        x, y = batch["labeled"][0], batch["labeled"][1]
        unlabeled = batch.get("unlabeled")
        return (x, y), (None if unlabeled is None else unlabeled[0])
    return (batch[0], batch[1]), None


def confusion_png(matrix: np.ndarray, path: Path, title: str, class_names: Sequence[str] | None = None) -> None:
    """Row-normalised confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = matrix.shape[0]
    names = list(class_names) if class_names is not None and len(class_names) == k else [str(i) for i in range(k)]
    rows = matrix.sum(1, keepdims=True).clip(min=1)
    side = min(max(4.0, 0.45 * k + 1.5), 30.0)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ax.imshow(matrix / rows, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] / rows[i, 0] > 0.5 else "black")
        ax.set_xticks(range(k), names, rotation=90, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


class ClassificationEvaluation:
    """Validation shared by the classifiers: loss, accuracy, confusion matrix. Host classes call
    :meth:`_init_evaluation` in ``__init__`` and implement :meth:`classify` (images -> logits)."""

    def _init_evaluation(self, num_classes: int, class_names: Sequence[str] | None, confusion_dir: str | None,
                         save_confusion: bool) -> None:
        require(int(num_classes) >= 2, "model.num_classes", f"must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else None
        self.confusion_dir = None if confusion_dir is None else str(confusion_dir)
        self.save_confusion = bool(save_confusion)
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_acc_balanced = MulticlassAccuracy(self.num_classes, average="macro")
        self.val_confusion = MulticlassConfusionMatrix(self.num_classes)
        self.last_confusion: np.ndarray | None = None

    def classify(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    data_kinds = ("labeled_images",)

    @property
    def headline_metrics(self) -> list[str]:
        return ["val/acc", "val/acc_balanced"]

    #: the direction of the metrics logged here (better high)
    evaluation_modes = {"val/acc": "max", "val/acc_balanced": "max", "train/acc": "max", "train/acc_labeled": "max"}

    def on_validation_epoch_start(self) -> None:
        for metric in (self.val_acc, self.val_acc_balanced, self.val_confusion):
            metric.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        (x, y), _ = labeled_part(batch)
        logits = self.classify(x)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=x.shape[0])
        pred = logits.argmax(1)
        for metric in (self.val_acc, self.val_acc_balanced, self.val_confusion):
            metric.update(pred, y)

    def on_validation_epoch_end(self) -> None:
        self.log("val/acc", self.val_acc.compute(), on_epoch=True)
        self.log("val/acc_balanced", self.val_acc_balanced.compute(), on_epoch=True)
        self.last_confusion = self.val_confusion.compute().cpu().numpy()
        super().on_validation_epoch_end()
        trainer = self._trainer
        if (not self.save_confusion or trainer is None or trainer.sanity_checking or not trainer.is_global_zero
                or trainer.fast_dev_run):
            return
        directory = Path(self.confusion_dir or Path(trainer.default_root_dir) / "confusion")
        step = trainer.global_step
        path = directory / f"confusion_step{step:07d}.png"
        names = self.class_names or getattr(getattr(trainer, "datamodule", None), "class_names", None)
        acc = float(np.trace(self.last_confusion) / max(self.last_confusion.sum(), 1))
        confusion_png(self.last_confusion, path, f"step {step}: accuracy {acc:.4f}", names)
        self._log_confusion(path, step)

    def _log_confusion(self, path: Path, step: int) -> None:
        from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key="confusion_matrix", images=[str(path)], step=step)
            elif isinstance(logger, TensorBoardLogger):
                from PIL import Image

                array = np.asarray(Image.open(path).convert("RGB"))
                logger.experiment.add_image("confusion_matrix", torch.from_numpy(array).permute(2, 0, 1), step)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.classify(x).argmax(1)


class Classifier(ClassificationEvaluation, TrainingModule):
    """Args:
        network: an nn.Module images -> logits (src/networks/classifier.py).
        num_classes: number of classes (checked against the network's ``num_classes``).
        optimizer: the ``optimizer`` config group.
        label_smoothing: cross-entropy label smoothing.
        class_names: names for the confusion matrix (default: the data module's, else 0..K-1).
        confusion_dir: where the confusion PNGs go (default: <output_dir>/confusion).
        save_confusion: write (and log) the confusion matrix PNG at each validation.
    """

    def __init__(self, network: nn.Module, num_classes: int, optimizer=None,
                 label_smoothing: float = 0.0, class_names: Sequence[str] | None = None,
                 confusion_dir: str | None = None, save_confusion: bool = True, seed: int = 0,
                 monitor: Mapping | None = None):
        super().__init__(optimizer=optimizer, seed=seed, monitor=monitor)
        net_classes = getattr(network, "num_classes", num_classes)
        require(net_classes == num_classes, "model.num_classes",
                f"{num_classes} differs from the network's num_classes {net_classes}")
        require(0 <= label_smoothing < 1, "model.label_smoothing", f"must be in [0, 1), got {label_smoothing}")
        self.network = network
        self.label_smoothing = float(label_smoothing)
        self._init_evaluation(num_classes, class_names, confusion_dir, save_confusion)
        self.metric_modes.update(self.evaluation_modes)

    @property
    def players(self) -> dict[str, nn.Module]:
        return {"classifier": self.network}

    def classify(self, x: Tensor) -> Tensor:
        return self.network(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def train_iteration(self, batch) -> None:
        (x, y), _ = labeled_part(batch)
        logits = self.network(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.update("classifier", loss)
        self.record(loss=loss, acc=(logits.detach().argmax(1) == y).float().mean())
