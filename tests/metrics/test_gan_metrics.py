import math

import torch

from src.data.mixtures import mixture_centers, sample_mixture
from src.metrics.mmd import gaussian_mmd2
from src.metrics.mode_coverage import ModeCoverage, mode_statistics


def test_perfect_samples_capture_every_mode_with_high_quality():
    centers = mixture_centers("grid25")
    x = sample_mixture(centers, 0.05, 2500, torch.Generator().manual_seed(0))
    s = mode_statistics(x, centers, 0.05)
    assert s["modes_captured"] == 25 and s["hq_fraction"] > 0.98 and s["reverse_kl"] < 0.02


def test_collapsed_samples():
    centers = mixture_centers("ring8")
    x = centers[0].repeat(100, 1) + 0.001 * torch.randn(100, 2)
    s = mode_statistics(x, centers, 0.02)
    assert s["modes_captured"] == 1 and s["hq_fraction"] == 1
    assert math.isclose(float(s["reverse_kl"]), math.log(8), rel_tol=1e-5)


def test_far_samples_are_not_high_quality():
    s = mode_statistics(torch.full((10, 2), 100.0), mixture_centers("ring8"), 0.02)
    assert s["modes_captured"] == 0 and s["hq_fraction"] == 0 and math.isinf(float(s["reverse_kl"]))


def test_metric_ignores_real_samples_and_resets():
    m = ModeCoverage(mixture="ring8", std=0.02)
    m.update(torch.full((5, 2), 100.0), real=True)
    m.update(mixture_centers("ring8"), real=False)
    assert m.compute()["modes_captured"] == 8
    m.reset()
    m.update(mixture_centers("ring8")[:2], real=False)
    assert m.compute()["modes_captured"] == 2


def test_mmd_is_small_for_same_distribution_and_large_for_different():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 10, generator=g), torch.randn(300, 10, generator=g)
    assert abs(float(gaussian_mmd2(a, b))) < 0.01
    assert float(gaussian_mmd2(a, b + 3)) > 0.3
