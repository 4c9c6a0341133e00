"""Improved precision / recall and density / coverage (src/metrics/manifold.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from src.metrics.manifold import ManifoldMetrics, manifold_metrics

KEYS = ("precision", "recall", "density", "coverage")


def brute_force(real: np.ndarray, fake: np.ndarray, k_pr: int, k_dc: int) -> dict[str, float]:
    """The papers' definitions with plain Python loops (independent of the implementation under test)."""
    real, fake = real.tolist(), fake.tolist()

    def dist(a, b):
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))

    def radius(points, i, k):
        others = sorted(dist(points[i], points[j]) for j in range(len(points)) if j != i)
        return others[k - 1]

    real_pr = [radius(real, i, k_pr) for i in range(len(real))]
    real_dc = [radius(real, i, k_dc) for i in range(len(real))]
    fake_pr = [radius(fake, j, k_pr) for j in range(len(fake))]

    precision = sum(any(dist(y, x) <= r for x, r in zip(real, real_pr)) for y in fake) / len(fake)
    recall = sum(any(dist(x, y) <= r for y, r in zip(fake, fake_pr)) for x in real) / len(real)
    hits = sum(sum(dist(y, x) <= r for x, r in zip(real, real_dc)) for y in fake)
    density = hits / (k_dc * len(fake))
    coverage = sum(any(dist(x, y) <= r for y in fake) for x, r in zip(real, real_dc)) / len(real)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def as_floats(out: dict[str, torch.Tensor]) -> dict[str, float]:
    assert set(out) == set(KEYS)
    for v in out.values():
        assert v.ndim == 0 and v.dtype == torch.float32
    return {k: v.item() for k, v in out.items()}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k_pr,k_dc", [(3, 5), (1, 1), (2, 7)])
def test_matches_brute_force(seed, k_pr, k_dc):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(40, 3))
    fake = rng.normal(size=(35, 3)) * 1.3 + 0.4          # overlapping, so no metric is trivially 0 or 1
    got = as_floats(manifold_metrics(torch.from_numpy(real), torch.from_numpy(fake), k_pr, k_dc))
    want = brute_force(real, fake, k_pr, k_dc)
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert 0 < want["precision"] < 1 and 0 < want["density"]          # not a degenerate configuration


def test_matches_brute_force_with_duplicate_points_and_copies():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(20, 3))
    real = np.concatenate([base, base[:8]])              # exact duplicates: radius 0 for k = 1
    fake = np.concatenate([base[5:15], rng.normal(size=(15, 3)) + 0.5])   # copies land on ball surfaces
    for k_pr, k_dc in [(1, 1), (3, 5)]:
        got = as_floats(manifold_metrics(torch.from_numpy(real), torch.from_numpy(fake), k_pr, k_dc, chunk=4))
        want = brute_force(real, fake, k_pr, k_dc)
        for key in KEYS:
            assert got[key] == pytest.approx(want[key], abs=1e-6), (k_pr, k_dc, key)


def test_float32_input_and_numpy_input():
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(30, 4, generator=g), torch.randn(25, 4, generator=g) + 0.3
    want = brute_force(real.double().numpy(), fake.double().numpy(), 3, 5)
    got = as_floats(manifold_metrics(real, fake))
    assert got == pytest.approx(want, abs=1e-6)
    assert as_floats(manifold_metrics(real.numpy(), fake.numpy())) == got


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 16, generator=g)
    fake = torch.randn(250, 16, generator=g) * 1.2 + 0.2
    ref = manifold_metrics(real, fake, chunk=1024)
    for chunk in (7, 1, 299, 300):
        out = manifold_metrics(real, fake, chunk=chunk)
        for key in KEYS:
            assert torch.equal(out[key], ref[key]), (chunk, key)


def test_permutation_invariant():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(80, 5, generator=g), torch.randn(60, 5, generator=g) + 0.5
    ref = manifold_metrics(real, fake, chunk=9)
    out = manifold_metrics(real[torch.randperm(80, generator=g)], fake[torch.randperm(60, generator=g)], chunk=13)
    for key in KEYS:
        assert out[key].item() == pytest.approx(ref[key].item(), abs=1e-7)


@pytest.mark.parametrize("k_dc", [1, 5])
@pytest.mark.parametrize("offset,dim,chunk", [(0.0, 3, 1024), (1e3, 64, 13)])
def test_identical_sets(k_dc, offset, dim, chunk):
    """Every real ball (no distance ties in continuous data) holds its centre and exactly k_dc other points,
    so sum_j #balls containing fake j = N (k_dc + 1) and density = (k_dc + 1) / k_dc. The large offset makes
    the fast distance pass lose ~1e-10 of relative accuracy: the exact recheck must still put every k-th
    neighbour (lying exactly on the ball's surface) inside."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(120, dim, generator=g, dtype=torch.float64) + offset
    out = as_floats(manifold_metrics(x, x.clone(), k_pr=3, k_dc=k_dc, chunk=chunk))
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    assert out["density"] == pytest.approx((k_dc + 1) / k_dc, abs=1e-6)


def test_far_fakes_score_zero():
    g = torch.Generator().manual_seed(4)
    real = torch.randn(50, 8, generator=g)
    fake = torch.randn(40, 8, generator=g) + 100.0
    out = as_floats(manifold_metrics(real, fake))
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def two_clusters(seed: int, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, generator=g, dtype=torch.float64)
    b = torch.randn(n, 2, generator=g, dtype=torch.float64) + torch.tensor([1000.0, 0.0], dtype=torch.float64)
    return a, b


def test_mode_dropping_with_copies_is_exact():
    a, b = two_clusters(5)
    out = as_floats(manifold_metrics(torch.cat([a, b]), a.clone(), k_pr=3, k_dc=5, chunk=64))
    assert out["precision"] == 1.0
    assert out["recall"] == 0.5 and out["coverage"] == 0.5
    assert out["density"] == pytest.approx(6 / 5, abs=1e-6)    # the identical-set value within cluster a


def test_mode_dropping_with_fresh_samples():
    a, b = two_clusters(6, n=300)
    g = torch.Generator().manual_seed(60)
    fake = torch.randn(300, 2, generator=g, dtype=torch.float64)      # same distribution as cluster a only
    out = as_floats(manifold_metrics(torch.cat([a, b]), fake))
    assert out["precision"] >= 0.9
    assert 0.4 <= out["recall"] <= 0.5                 # cluster b (half the reals) is never reached
    assert 0.4 <= out["coverage"] <= 0.5


def test_metric_wrapper_equals_function():
    g = torch.Generator().manual_seed(8)
    real, fake = torch.randn(90, 6, generator=g), torch.randn(70, 6, generator=g) * 0.9 + 0.1
    metric = ManifoldMetrics(k_pr=3, k_dc=5)
    for batch in real.split(32):
        metric.update(batch, real=True)
    for batch in fake.split(25):
        metric.update(batch, real=False)
    got, want = metric.compute(), manifold_metrics(real, fake, 3, 5)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key

    metric.reset()
    with pytest.raises(ValueError, match="both real and fake"), pytest.warns(UserWarning, match="before the"):
        metric.compute()

    capped = ManifoldMetrics(k_pr=2, k_dc=4, max_samples=50)
    for batch in real.split(32):
        capped.update(batch, real=True)
    for batch in fake.split(25):
        capped.update(batch, real=False)
    assert sum(t.shape[0] for t in capped.real_features) == 50
    got, want = capped.compute(), manifold_metrics(real[:50], fake[:50], 2, 4)
    for key in KEYS:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("real,fake,kwargs,match", [
    (torch.randn(10), torch.randn(10, 3), {}, "2-D"),
    (torch.randn(10, 3), torch.randn(2, 10, 3), {}, "2-D"),
    (torch.randn(10, 3), torch.randn(10, 4), {}, "same dimension"),
    (torch.randn(10, 0), torch.randn(10, 0), {}, "at least one feature"),
    (torch.randn(5, 3), torch.randn(10, 3), {}, "real points"),            # needs max(3, 5) + 1 = 6
    (torch.randn(10, 3), torch.randn(3, 3), {}, "fake points"),            # needs 3 + 1 = 4
    (torch.randn(10, 3), torch.randn(10, 3), {"k_pr": 0}, "k_pr"),
    (torch.randn(10, 3), torch.randn(10, 3), {"k_dc": 2.5}, "k_dc"),
    (torch.randn(10, 3), torch.randn(10, 3), {"k_dc": True}, "k_dc"),
    (torch.randn(10, 3), torch.randn(10, 3), {"chunk": 0}, "chunk"),
    (torch.full((10, 3), float("nan")), torch.randn(10, 3), {}, "NaN"),
])
def test_bad_inputs_raise(real, fake, kwargs, match):
    with pytest.raises(ValueError, match=match):
        manifold_metrics(real, fake, **kwargs)


def test_minimal_sizes_are_accepted():
    g = torch.Generator().manual_seed(9)
    out = as_floats(manifold_metrics(torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g)))
    assert all(0.0 <= out[key] <= 1.0 for key in ("precision", "recall", "coverage"))
    with pytest.raises(ValueError):
        ManifoldMetrics(k_pr=0)
    with pytest.raises(ValueError, match="2-D"):
        ManifoldMetrics().update(torch.randn(4), real=True)


def test_distance_blocks_never_exceed_chunk_rows(monkeypatch):
    import src.metrics.manifold as manifold

    shapes = []
    fast = manifold._fast_sq_dist

    def recording(a, b, na, nb):
        shapes.append((a.shape[0], b.shape[0]))
        return fast(a, b, na, nb)

    monkeypatch.setattr(manifold, "_fast_sq_dist", recording)
    g = torch.Generator().manual_seed(10)
    manifold.manifold_metrics(torch.randn(45, 4, generator=g), torch.randn(31, 4, generator=g), chunk=8)
    assert shapes and all(rows <= 8 and cols <= 45 for rows, cols in shapes)
    assert sum(rows for rows, cols in shapes) == 45 + 31 + 31     # real radii, fake radii, fake x real pass
