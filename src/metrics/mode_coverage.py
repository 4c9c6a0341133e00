"""Mode coverage of samples from a Gaussian mixture (the 2D benchmarks of Metz et al. 2017 and
Lin et al. 2018, "PacGAN"): a sample is high quality if it lies within `threshold` standard deviations
of its nearest mode centre; a mode is captured if it gets at least one high-quality sample; the reverse
KL is KL(q || uniform) between the histogram q of high-quality samples over modes and the uniform
distribution."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


def mode_statistics(samples: Tensor, centers: Tensor, std: float, threshold: float = 3.0) -> dict[str, Tensor]:
    samples, centers = samples.float(), centers.to(samples).float()
    dist = torch.cdist(samples, centers)                  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    hq = nearest_dist <= threshold * std
    counts = torch.bincount(nearest[hq], minlength=centers.shape[0]).float()
    k = centers.shape[0]
    if counts.sum() > 0:
        q = counts / counts.sum()
        nz = q > 0
        reverse_kl = (q[nz] * torch.log(q[nz] * k)).sum()
    else:
        reverse_kl = torch.tensor(float("inf"))
    return {
        "modes_captured": (counts > 0).sum().float(),
        "hq_fraction": hq.float().mean(),
        "reverse_kl": reverse_kl,
    }


class ModeCoverage(Metric):
    """Collects generated samples (``update(x, real=False)``; real ones are ignored) and reports
    modes_captured, hq_fraction and reverse_kl."""

    full_state_update = False
    higher_is_better = True
    modes = {"modes_captured": "max", "hq_fraction": "max", "reverse_kl": "min"}  # per key of compute()
    headline = ("modes_captured", "hq_fraction", "reverse_kl")  # the keys an end-of-run table shows

    def __init__(self, mixture: str | None = None, std: float = 0.02, threshold: float = 3.0,
                 centers: Sequence[Sequence[float]] | None = None):
        super().__init__()
        if centers is None:
            from src.data.mixtures import mixture_centers

            centers = mixture_centers(mixture)
        self.register_buffer("centers", torch.as_tensor(centers, dtype=torch.float32), persistent=False)
        self.std, self.threshold = float(std), float(threshold)
        self.add_state("samples", default=[], dist_reduce_fx="cat")

    def update(self, x: Tensor, real: bool = False) -> None:
        if not real:
            self.samples.append(x.detach().flatten(1).float())

    def compute(self) -> dict[str, Tensor]:
        samples = self.samples if isinstance(self.samples, Tensor) else torch.cat(self.samples)
        return mode_statistics(samples, self.centers, self.std, self.threshold)
