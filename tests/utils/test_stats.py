"""The paired-difference interval against values computed by hand."""
import math

import pytest

from src.utils.stats import format_interval, mean_std, paired_interval


def test_mean_std_is_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0, float("nan")]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)


def test_paired_interval_uses_t_with_n_minus_1_degrees():
    a, b = [3.0, 5.0, 4.0, 6.0, 7.0], [2.0, 2.0, 2.0, 2.0, 2.0]
    mean, low, high, n = paired_interval(a, b)
    diffs = [1.0, 3.0, 2.0, 4.0, 5.0]
    sd = math.sqrt(sum((d - 3.0) ** 2 for d in diffs) / 4)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, 4)
    assert (mean, n) == (3.0, 5) and low == pytest.approx(3.0 - half) and high == pytest.approx(3.0 + half)
    assert paired_interval([1.0, float("nan")], [0.0, 1.0])[3] == 1
    assert format_interval(*paired_interval(a, b)[:3]).startswith("+3 [")
