"""A tiny synthetic segmentation data module for the segmentation tests (no files, no downloads):
images of coloured rectangles on a background, masks with the rectangles' classes and a border of
ignored (255) pixels; the interface of the project's segmentation data modules (labeled_fraction,
unlabeled -> {"labeled": loader, "unlabeled": loader}, num_classes, ignore_index, class_names, mean, std)."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

COLOURS = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])


def make_scenes(n: int, size: int = 32, num_classes: int = 4, seed: int = 0, border: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, size, size)
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(3):
            c = int(torch.randint(1, num_classes, (1,), generator=g))
            h, w = (int(v) for v in torch.randint(size // 4, size // 2, (2,), generator=g))
            r, s = (int(v) for v in torch.randint(0, size - size // 2, (2,), generator=g))
            y[i, r:r + h, s:s + w] = c
        x[i] = COLOURS[y[i]].permute(2, 0, 1)
    x = x + 0.1 * torch.randn(x.shape, generator=g)
    if border:
        y[:, :border], y[:, -border:], y[:, :, :border], y[:, :, -border:] = 255, 255, 255, 255
    return (x - 0.5) / 0.5, y


class FakeSegData(pl.LightningDataModule):
    def __init__(self, num_train: int = 16, num_val: int = 8, size: int = 32, num_classes: int = 4,
                 batch_size: int = 4, labeled_fraction: float = 1.0, unlabeled: bool = False, seed: int = 0):
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, 255
        self.class_names = ["background", "red", "green", "blue", "yellow"][:num_classes]
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        self.batch_size, self.unlabeled = batch_size, unlabeled
        x, y = make_scenes(num_train, size, num_classes, seed)
        n_lab = max(batch_size, int(round(labeled_fraction * num_train)))
        self.labeled = TensorDataset(x[:n_lab], y[:n_lab])
        self.unlabeled_set = TensorDataset(x[n_lab:] if n_lab < num_train else x, y[n_lab:] if n_lab < num_train else y)
        self.val_set = TensorDataset(*make_scenes(num_val, size, num_classes, seed + 1))

    def train_dataloader(self):
        lab = DataLoader(self.labeled, batch_size=self.batch_size, shuffle=True, drop_last=True,
                         generator=torch.Generator().manual_seed(0))
        if not self.unlabeled:
            return lab
        unl = DataLoader(self.unlabeled_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                         generator=torch.Generator().manual_seed(1))
        return {"labeled": lab, "unlabeled": unl}

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=4)
