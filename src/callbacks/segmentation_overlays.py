"""Segmentation pictures at every validation: for a few fixed validation images, one row each of
image | ground truth | prediction (| discriminator confidence, for adversarial models), with a legend
of the class colours (colour -> class name; white: ignored pixels). Saved as
<dirpath>/overlays_step<step>.png and sent to every image-capable logger (wandb, TensorBoard). Only
rank 0 draws; the images are the first `num_images` of the validation loader, taken once."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from src.callbacks.samples import log_image_file  # noqa: E402


def palette(num_classes: int) -> np.ndarray:
    """(K + 1, 3) RGB in [0, 1]: distinct colours per class (tab20, then hsv), white for ignored."""
    base = plt.get_cmap("tab20")(np.arange(20))[:, :3]
    if num_classes > 20:
        extra = plt.get_cmap("hsv")(np.linspace(0, 1, num_classes - 20, endpoint=False))[:, :3]
        base = np.concatenate([base, extra])
    return np.concatenate([base[:num_classes], np.ones((1, 3))])


def colourise(labels: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    idx = np.where((labels == ignore_index) | (labels < 0) | (labels >= num_classes), num_classes, labels)
    return palette(num_classes)[idx]


def legend_entries(num_classes: int, class_names=None) -> list[tuple[str, np.ndarray]]:
    """(name, colour) of every class, in class order, then the ignored pixels'."""
    names = list(class_names) if class_names is not None and len(class_names) == num_classes else \
        [str(k) for k in range(num_classes)]
    colours = palette(num_classes)
    return [*zip(names, colours[:num_classes]), ("ignored", colours[num_classes])]


def denormalise(image: torch.Tensor, mean, std) -> np.ndarray:
    x = image.float().cpu()
    if mean is not None and std is not None and x.shape[0] == len(mean):
        x = x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-8)
    x = x.clamp(0, 1).permute(1, 2, 0).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def overlay_png(images, targets, preds, confidence, path: Path, num_classes: int, ignore_index: int,
                mean=None, std=None, title: str = "", class_names=None) -> None:
    n = images.shape[0]
    cols = 3 + (confidence is not None)
    fig, axes = plt.subplots(n, cols, figsize=(2.2 * cols, 2.2 * n), dpi=100, squeeze=False)
    for i in range(n):
        panels = [denormalise(images[i], mean, std), colourise(targets[i].numpy(), num_classes, ignore_index),
                  colourise(preds[i].numpy(), num_classes, ignore_index)]
        names = ["image", "ground truth", "prediction"]
        for j, (panel, name) in enumerate(zip(panels, names)):
            axes[i, j].imshow(panel, cmap="gray" if panel.ndim == 2 else None, interpolation="nearest")
            axes[i, j].set_title(name if i == 0 else "", fontsize=8)
        if confidence is not None:
            axes[i, 3].imshow(confidence[i].numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            axes[i, 3].set_title("D confidence" if i == 0 else "", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    from matplotlib.patches import Patch

    entries = legend_entries(num_classes, class_names)
    columns = min(len(entries), 6)
    fig.tight_layout(rect=(0, 0.045 * (-(-len(entries) // columns)) + 0.02, 1, 1))
    fig.legend(handles=[Patch(facecolor=c, edgecolor="0.5", label=name) for name, c in entries], loc="lower center",
               ncol=columns, fontsize=7, frameon=False)
    fig.savefig(path)
    plt.close(fig)


class SegmentationOverlays(pl.Callback):
    def __init__(self, dirpath: str, num_images: int = 4):
        self.dirpath = Path(dirpath)
        self.num_images = int(num_images)
        self._fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    def _take_fixed(self, trainer: pl.Trainer):
        if self._fixed is not None:
            return self._fixed
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            return None
        xs, ys = [], []
        for batch in loader:
            if isinstance(batch, dict):
                batch = batch.get("labeled", next(iter(batch.values())))
            xs.append(batch[0])
            ys.append(batch[1])
            if sum(len(x) for x in xs) >= self.num_images:
                break
        if not xs:
            return None
        if any(x.shape[-2:] != xs[0].shape[-2:] for x in xs):  # images of different sizes: one at a time
            self._fixed = ([x[i:i + 1] for x in xs for i in range(len(x))][: self.num_images],
                           [y[i:i + 1] for y in ys for i in range(len(y))][: self.num_images])
        else:
            self._fixed = (torch.cat(xs)[: self.num_images], torch.cat(ys)[: self.num_images])
        return self._fixed

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not hasattr(pl_module, "overlay_outputs"):
            return
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        fixed = self._take_fixed(trainer)
        if fixed is None:
            return
        images, targets = fixed
        chunks = images if isinstance(images, list) else [images]
        preds, confs = [], []
        for x in chunks:
            out = pl_module.overlay_outputs(x.to(pl_module.device))
            preds.append(out["pred"].cpu())
            confs.append(None if out.get("confidence") is None else out["confidence"].float().cpu())
        if isinstance(images, list):  # pad the different sizes to one panel size
            images, targets, preds, confs = _pad_list(images, targets, preds, confs, pl_module)
        else:
            preds = torch.cat(preds)
            confs = None if confs[0] is None else torch.cat(confs)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step
        path = self.dirpath / f"overlays_step{step:07d}.png"
        dm = trainer.datamodule
        overlay_png(images, targets, preds, confs, path, num_classes=pl_module.num_classes,
                    ignore_index=getattr(pl_module, "ignore_index", 255), mean=getattr(dm, "mean", None),
                    std=getattr(dm, "std", None), title=f"step {step}",
                    class_names=pl_module.val_metrics.class_names)
        self._log_image(trainer, path, step)

    @staticmethod
    def _log_image(trainer: pl.Trainer, path: Path, step: int) -> None:
        log_image_file(trainer, path, "overlays", step)


def _pad_list(images, targets, preds, confs, pl_module):
    h = max(x.shape[-2] for x in images)
    w = max(x.shape[-1] for x in images)
    ignore = getattr(pl_module, "ignore_index", 255)

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=value)

    images = torch.cat([pad(x.float(), 0.0) for x in images])
    targets = torch.cat([pad(y, ignore) for y in targets])
    preds = torch.cat([pad(p, ignore) for p in preds])
    confs = None if confs[0] is None else torch.cat([pad(c, 0.0) for c in confs])
    return images, targets, preds, confs
