"""2D Gaussian mixtures for mode-collapse studies (Metz et al. 2017; Lin et al. 2018, "PacGAN"):
ring8, 8 modes on a circle of radius 2 with std 0.02, and grid25, a 5x5 grid at {-4,-2,0,2,4}^2 with
std 0.05. Samples are drawn once from the run's seed (a fixed training set large enough to be
effectively infinite)."""
from __future__ import annotations

import math

import torch

from src.data.base import ResumableDataModule, Tensors
from src.utils.schema import choose


def mixture_centers(name: str) -> torch.Tensor:
    choose(name, ("ring8", "grid25"), "dataset.mixture")
    if name == "ring8":
        angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return torch.stack([2 * torch.cos(angles), 2 * torch.sin(angles)], dim=1).float()
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(axis, axis)


def sample_mixture(centers: torch.Tensor, std: float, n: int, generator: torch.Generator) -> torch.Tensor:
    which = torch.randint(len(centers), (n,), generator=generator)
    return centers[which] + std * torch.randn(n, centers.shape[1], generator=generator)


class MixtureDataModule(ResumableDataModule):
    def __init__(self, mixture: str = "ring8", std: float | None = None, num_train: int = 51200,
                 num_val: int = 2500, **kwargs):
        super().__init__(**kwargs)
        self.mixture = mixture
        self.centers = mixture_centers(mixture)
        self.std = float(std if std is not None else {"ring8": 0.02, "grid25": 0.05}[mixture])
        self.num_train, self.num_val = num_train, num_val
        self.shape = (2,)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        g = torch.Generator().manual_seed(self.seed)
        train = sample_mixture(self.centers, self.std, self.num_train, g)
        val = sample_mixture(self.centers, self.std, self.num_val, g)
        self.train_set, self.val_set = Tensors(train), Tensors(val)
