"""Maximum mean discrepancy between generated and real samples (Gretton et al. 2012) with a Gaussian
kernel whose bandwidth is the median pairwise distance: a cheap, download-free sample-quality metric
that needs no feature network (lower is better; 0 for identical distributions)."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def gaussian_mmd2(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 estimate, bandwidth from the median heuristic on the pooled samples."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    n, m = x.shape[0], y.shape[0]
    bandwidth = d2[d2 > 0].median().clamp_min(1e-12)
    k = torch.exp(-d2 / bandwidth)
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    mmd2 = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (mmd2 - 2 * kxy.mean()).float()


class PixelMMD(Metric):
    full_state_update = False
    higher_is_better = False
    modes = {"mmd": "min"}  # direction of each key compute() returns
    headline = ("mmd",)  # the keys an end-of-run table shows

    def __init__(self, max_real: int = 1000):
        super().__init__()
        self.max_real = max_real
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")

    def update(self, x: Tensor, real: bool) -> None:
        (self.real if real else self.fake).append(x.detach().flatten(1).float())

    def compute(self) -> dict[str, Tensor]:
        cat = lambda s: s if isinstance(s, Tensor) else torch.cat(s)  # noqa: E731
        real, fake = cat(self.real)[: self.max_real], cat(self.fake)
        return {"mmd": gaussian_mmd2(fake, real)}
