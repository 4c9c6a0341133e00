"""Manifold-based fidelity / diversity metrics of generated samples, computed from feature vectors.

* Improved precision and recall: T. Kynkaanniemi, T. Karras, S. Laine, J. Lehtinen and T. Aila,
  "Improved Precision and Recall Metric for Assessing Generative Models", NeurIPS 2019.
* Density and coverage: M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi and J. Yoo, "Reliable Fidelity and
  Diversity Metrics for Generative Models", ICML 2020.

Both describe a set of feature vectors by the union of balls B(x_i, r_i) around its points, where r_i is
the distance from x_i to its k-th nearest neighbour within the same set (x_i itself excluded); "inside a
ball" means distance <= radius. With N reals X and M fakes Y (same feature space):

* precision = share of fakes inside the real manifold (k = k_pr, 3 in the paper);
* recall = share of reals inside the fake manifold (k = k_pr);
* density = 1 / (k M) * sum over fakes of the number of real balls that contain it (k = k_dc, 5 in the
  paper); it is not bounded by 1: on two identical sets without distance ties it is exactly (k + 1) / k,
  since every real ball then holds its centre and exactly k other points;
* coverage = share of reals whose ball (k = k_dc) contains at least one fake.

Numerics (what a user can rely on). Features are converted to float64 and centred on the real mean.
Distances are compared as squared distances. A fast pass computes them in chunks of `chunk` rows with
one matrix product, |a|^2 + |b|^2 - 2 a.b (the same computation as ``torch.cdist``'s matrix-product mode;
done here with the squared norms computed once instead of once per chunk). That expansion carries a
rounding error of at most about 2 d eps (|a|^2 + |b|^2); every pair whose fast value lies within a safe
bound of that size from a radius it is compared with (and every candidate k-th neighbour) is recomputed
by a deterministic pairwise sum of (a - b)^2 that gives the same bits for (a, b) and (b, a) whatever the
chunk, the batch or the device. So the results are those of that exact per-pair distance: independent of
`chunk`, symmetric, and boundary ties (e.g. fakes that are copies of reals, the k-th neighbour lying
exactly on the ball's surface) are always resolved as "inside". Outside such ties the recomputation
touches only a handful of pairs. float64 is used because float32 (or TF32 matrix products on GPUs) would
make that band, and the error of the fast pass, some 2^29 times wider.

Memory: the largest temporaries are a few chunk x max(N, M) matrices (float64 and bool); with the
default chunk 1024 and 10,000 x 10,000 points that is ~80 MB each.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["manifold_metrics", "ManifoldMetrics"]

_EPS64 = torch.finfo(torch.float64).eps
_PAIR_BATCH_ELEMENTS = 1 << 21   # elements of (pairs x padded dim) handled at once by the exact recheck


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_features(name: str, x) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a 2-D tensor (N, d), got shape {tuple(x.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} features must have at least one feature dimension, got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} features must be real-valued, got {x.dtype}")
    x = x.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or infinite values")
    return x


def _tolerance_scale(dim: int) -> float:
    """Bound (relative to |a|^2 + |b|^2) on the difference between the fast and the exact squared distance.

    Fast pass: norms and dot product each err by at most gamma_d * (|a|^2 + |b|^2) (for any summation
    order, with or without FMA), plus a few roundings of the final additions; exact pass: at most
    (log2(2d) + 3) eps relative to (a - b)^2 <= 2 (|a|^2 + |b|^2). (4 d + 64) eps covers both with margin."""
    return (4 * dim + 64) * _EPS64


def _fast_sq_dist(a: Tensor, b: Tensor, na: Tensor, nb: Tensor) -> Tensor:
    """|a_i|^2 + |b_j|^2 - 2 a_i.b_j as an (len(a), len(b)) matrix, clamped at 0."""
    return torch.addmm(na[:, None] + nb[None, :], a, b.T, beta=1.0, alpha=-2.0).clamp_min_(0.0)


def _exact_sq_dist(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise squared distance by a fixed pairwise (tree) sum of (a - b)^2 over a power-of-two padded
    dimension: only element-wise operations, so the bits depend on the two vectors alone (not on how many
    rows are processed together, the thread count or the device), and (a, b) equals (b, a)."""
    diff = a - b
    sq = diff * diff
    width = 1 << (sq.shape[-1] - 1).bit_length()
    if width != sq.shape[-1]:
        sq = F.pad(sq, (0, width - sq.shape[-1]))
    while sq.shape[-1] > 1:
        half = sq.shape[-1] // 2
        sq = sq[..., :half] + sq[..., half:]
    return sq[..., 0]


def _exact_pairs(a: Tensor, b: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
    """Exact squared distances between a[ia[p]] and b[ib[p]] for every p, in bounded batches."""
    width = 1 << (a.shape[1] - 1).bit_length()
    step = max(1, _PAIR_BATCH_ELEMENTS // width)
    out = a.new_empty(ia.shape[0])
    for s in range(0, ia.shape[0], step):
        out[s:s + step] = _exact_sq_dist(a[ia[s:s + step]], b[ib[s:s + step]])
    return out


def _knn_sq_radii(x: Tensor, norms: Tensor, ks: Sequence[int], chunk: int, scale: float) -> Tensor:
    """(N, len(ks)): exact squared distance from every point to its k-th nearest other point, per k."""
    n = x.shape[0]
    kmax = max(ks)
    out = x.new_empty(n, len(ks))
    cols = torch.tensor([k - 1 for k in ks], device=x.device)
    max_norm = norms.max()
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = torch.arange(stop - start, device=x.device)
        d2 = _fast_sq_dist(x[start:stop], x, norms[start:stop], norms)
        d2[rows, rows + start] = float("inf")                       # a point is not its own neighbour
        kth = d2.kthvalue(kmax, dim=1).values
        # Every true k-th (k <= kmax) neighbour has a fast value <= fast kmax-th value + 2 * tolerance.
        slack = 2 * scale * (norms[start:stop] + max_norm)
        cand_r, cand_c = (d2 <= (kth + slack)[:, None]).nonzero(as_tuple=True)
        exact = d2.fill_(float("inf"))
        exact[cand_r, cand_c] = _exact_pairs(x, x, cand_r + start, cand_c)
        out[start:stop] = exact.topk(kmax, dim=1, largest=False).values.index_select(1, cols)
    return out


def manifold_metrics(real: Tensor, fake: Tensor, k_pr: int = 3, k_dc: int = 5, chunk: int = 1024) -> dict[str, Tensor]:
    """Improved precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et al. 2020).

    Args:
        real: (N, d) features of real images; needs N >= max(k_pr, k_dc) + 1.
        fake: (M, d) features of generated images in the same feature space; needs M >= k_pr + 1.
        k_pr: neighbourhood size of the precision / recall manifolds (3 in the paper).
        k_dc: neighbourhood size of the real balls of density / coverage (5 in the paper).
        chunk: rows per block of the pairwise-distance computation; the results do not depend on it.

    Returns:
        {'precision', 'recall', 'density', 'coverage'} as 0-dim float32 tensors on the inputs' device.
        precision, recall and coverage lie in [0, 1]; density lies in [0, N / k_dc] (see the module
        docstring: (k_dc + 1) / k_dc for two identical sets).

    Raises:
        ValueError: inputs not 2-D, different feature dimensions or devices, non-finite values, too few
        points for the neighbourhood sizes, k or chunk not an integer >= 1.
    """
    k_pr = _check_int("k_pr", k_pr, 1)
    k_dc = _check_int("k_dc", k_dc, 1)
    chunk = _check_int("chunk", chunk, 1)
    real, fake = _as_features("real", real), _as_features("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise ValueError("real and fake features must have the same dimension, "
                         f"got {real.shape[1]} and {fake.shape[1]}")
    if real.device != fake.device:
        raise ValueError(f"real and fake features must be on the same device, got {real.device} and {fake.device}")
    n, m = real.shape[0], fake.shape[0]
    if n < max(k_pr, k_dc) + 1:
        raise ValueError(f"need at least max(k_pr, k_dc) + 1 = {max(k_pr, k_dc) + 1} real points, got {n}")
    if m < k_pr + 1:
        raise ValueError(f"need at least k_pr + 1 = {k_pr + 1} fake points, got {m}")

    center = real.mean(dim=0)
    real, fake = real - center, fake - center
    n_real, n_fake = (real * real).sum(dim=1), (fake * fake).sum(dim=1)
    scale = _tolerance_scale(real.shape[1])

    radii = _knn_sq_radii(real, n_real, (k_pr, k_dc), chunk, scale)
    r_pr, r_dc = radii[:, 0], radii[:, 1]                          # squared radii of the real balls
    f_pr = _knn_sq_radii(fake, n_fake, (k_pr,), chunk, scale)[:, 0]  # squared radii of the fake balls

    in_real_manifold = 0                                            # fakes inside some real k_pr-ball
    real_balls_hit = 0                                              # (fake, real k_dc-ball) incidences
    in_fake_manifold = torch.zeros(n, dtype=torch.bool, device=real.device)   # recall
    covered = torch.zeros(n, dtype=torch.bool, device=real.device)            # coverage
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        d2 = _fast_sq_dist(fake[start:stop], real, n_fake[start:stop], n_real)    # (c, N)
        tol = scale * (n_fake[start:stop, None] + n_real[None, :])
        f_rad = f_pr[start:stop, None]
        band = ((d2 - r_pr).abs_() <= tol) | ((d2 - r_dc).abs_() <= tol) | ((d2 - f_rad).abs_() <= tol)
        del tol
        band_r, band_c = band.nonzero(as_tuple=True)
        del band
        if band_r.numel():
            d2[band_r, band_c] = _exact_pairs(fake, real, band_r + start, band_c)
        in_real_manifold += int((d2 <= r_pr).any(dim=1).sum())
        inside_dc = d2 <= r_dc
        real_balls_hit += int(inside_dc.sum())
        covered |= inside_dc.any(dim=0)
        in_fake_manifold |= (d2 <= f_rad).any(dim=0)

    def scalar(value: float) -> Tensor:
        return torch.tensor(value, dtype=torch.float32, device=real.device)

    return {
        "precision": scalar(in_real_manifold / m),
        "recall": scalar(int(in_fake_manifold.sum()) / n),
        "density": scalar(real_balls_hit / (k_dc * m)),
        "coverage": scalar(int(covered.sum()) / n),
    }


class ManifoldMetrics(Metric):
    """torchmetrics wrapper of :func:`manifold_metrics`: collects real and fake feature vectors
    (``update(features, real=True/False)``) and returns precision, recall, density and coverage.

    Features are stored as given (floating dtype kept, other dtypes as float32) on the metric's device;
    under DDP the lists are concatenated across processes in rank order before ``compute``. With
    ``max_samples`` each process stops storing a set after ``max_samples`` rows and ``compute`` uses the
    first ``max_samples`` rows of each gathered set, i.e. mostly the low ranks' samples.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, k_pr: int = 3, k_dc: int = 5, max_samples: int | None = None, chunk: int = 1024, **kwargs):
        super().__init__(**kwargs)
        self.k_pr = _check_int("k_pr", k_pr, 1)
        self.k_dc = _check_int("k_dc", k_dc, 1)
        self.chunk = _check_int("chunk", chunk, 1)
        self.max_samples = None if max_samples is None else _check_int("max_samples", max_samples, 1)
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    @staticmethod
    def _stored(state) -> int:
        if isinstance(state, Tensor):
            return state.shape[0]
        return sum(t.shape[0] for t in state)

    def update(self, features: Tensor, real: bool) -> None:
        features = torch.as_tensor(features)
        if features.ndim != 2:
            raise ValueError(f"features must be a 2-D tensor (N, d), got shape {tuple(features.shape)}")
        if not features.is_floating_point():
            features = features.float()
        state = self.real_features if real else self.fake_features
        if self.max_samples is not None:
            room = self.max_samples - self._stored(state)
            if room <= 0:
                return
            features = features[:room]
        state.append(features.detach())

    def compute(self) -> dict[str, Tensor]:
        real = dim_zero_cat(self.real_features) if self._stored(self.real_features) else torch.empty(0, 0)
        fake = dim_zero_cat(self.fake_features) if self._stored(self.fake_features) else torch.empty(0, 0)
        if real.shape[0] == 0 or fake.shape[0] == 0:
            raise ValueError("ManifoldMetrics.compute needs both real and fake features; call update(x, real=True) "
                             "and update(x, real=False) first")
        if self.max_samples is not None:
            real, fake = real[: self.max_samples], fake[: self.max_samples]
        return manifold_metrics(real, fake, self.k_pr, self.k_dc, self.chunk)

    def extra_repr(self) -> str:
        return f"k_pr={self.k_pr}, k_dc={self.k_dc}, max_samples={self.max_samples}"
