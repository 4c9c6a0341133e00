"""Sample pictures at every validation, from the generator's fixed noise: a PNG grid for images, a
scatter over the mode centres for 2D points. Saved under the run and sent to every image-capable
logger (wandb, TensorBoard). Only rank 0 writes."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402


def scatter_png(samples: np.ndarray, centers: np.ndarray | None, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4, color="tab:blue", label="generated")
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], s=40, marker="x", color="tab:red", label="mode centres")
        lim = float(np.abs(centers).max()) * 1.4
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class SampleGrid(pl.Callback):
    def __init__(self, dirpath: str, num_samples: int = 64, num_points: int = 2500):
        self.dirpath = Path(dirpath)
        self.num_samples, self.num_points = num_samples, num_points

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not hasattr(pl_module, "sample_fixed"):
            return
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        self.dirpath.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step
        path = self.dirpath / f"samples_step{step:07d}.png"
        if len(getattr(trainer.datamodule, "shape", ())) == 1:  # 2D points
            samples = pl_module.sample_fixed(self.num_points).float().cpu().numpy()
            centers = getattr(trainer.datamodule, "centers", None)
            scatter_png(samples, None if centers is None else centers.numpy(), path, f"step {step}")
        else:
            images = pl_module.sample_fixed(self.num_samples).float().cpu()
            save_image(images, path, nrow=int(self.num_samples**0.5), normalize=True, value_range=(-1, 1))
        self._log_image(trainer, path, step)

    @staticmethod
    def _log_image(trainer: pl.Trainer, path: Path, step: int) -> None:
        log_image_file(trainer, path, "samples", step)


def log_image_file(trainer: pl.Trainer, path: Path, key: str, step: int) -> None:
    """Send a saved PNG to every image-capable logger (wandb, TensorBoard) under `key`."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=step)
        elif isinstance(logger, TensorBoardLogger):
            from PIL import Image

            array = np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image(key, torch.from_numpy(array).permute(2, 0, 1), step)
