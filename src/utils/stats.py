"""Summary statistics for results tables: mean and sample standard deviation, and the paired difference of
two methods over the same seeds with its 95% confidence interval (Student's t, n - 1 degrees of freedom)."""
from __future__ import annotations

import math
import statistics
from typing import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value) of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def paired_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean of a_i - b_i, lower, upper, n) over the pairs where both are finite: the difference of a method
    `a` to its baseline `b` run with the same seeds, with its `level` confidence interval."""
    from scipy.stats import t

    diffs = [float(x) - float(y) for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    n = len(diffs)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = statistics.fmean(diffs)
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    half = t.ppf(0.5 + level / 2, n - 1) * statistics.stdev(diffs) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def format_interval(mean: float, low: float, high: float, digits: int = 3) -> str:
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(low):
        return f"{mean:+.{digits}g}"
    return f"{mean:+.{digits}g} [{low:+.{digits}g}, {high:+.{digits}g}]"
