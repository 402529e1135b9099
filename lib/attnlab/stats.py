"""Uncertainty of the statistics claims read: bootstrap intervals over seeds and evaluation units.

A verdict is about a population of training runs, not one run. Results come as a table of
seeds x units (evaluation segments, test samples, timing repeats) x quantities. The
interval resamples seeds and units independently (a crossed, two-way bootstrap: each
replicate draws seeds with replacement and units with replacement, the same units for
every seed and every quantity, so comparisons stay paired), never single tokens. The
resampling and the percentile interval are `scipy.stats.bootstrap`'s; an axis of size one
is not resampled. Accuracies of one deterministic model use Wilson's interval
(`scipy.stats.binomtest`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% interval and what it was resampled over."""

    value: float
    low: float
    high: float
    n_seeds: int = 1
    n_units: int = 1
    method: str = "point"

    def text(self, fmt: str = ".3f") -> str:
        """'1.234 [1.200, 1.270]' (the point alone when there is no interval)."""
        if self.method == "point":
            return format(self.value, fmt)
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def point(value: float) -> Estimate:
    """An exact quantity (no sampling): its interval is the value itself."""
    v = float(value)
    return Estimate(v, v, v)


def crossed_bootstrap(data: np.ndarray, statistic: Callable[[np.ndarray], float], *,
                      n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Percentile bootstrap interval of `statistic(data)` resampling axis 0 (seeds) and axis 1 (units) of
    `data` (S, U, ...) independently (Owen 2007's two-way bootstrap for crossed designs)."""
    data = np.asarray(data, dtype=float)
    if data.ndim < 2:
        raise ValueError(f"data must be (seeds, units, ...); got shape {data.shape}")
    s, u = data.shape[:2]
    if s == 0 or u == 0:
        raise ValueError("no data to resample")
    value = float(statistic(data))
    axes = [ax for ax, n in ((0, s), (1, u)) if n >= 2]
    if not axes or not np.isfinite(value):
        return Estimate(value, value, value, s, u, "point")

    def stat(*idx: np.ndarray) -> float:
        sub = data
        for ax, ix in zip(axes, idx):
            sub = np.take(sub, ix.astype(int), axis=ax)
        return float(statistic(sub))

    samples = tuple(np.arange(data.shape[ax]) for ax in axes)
    from scipy import stats  # here, not at import: 1.3 s that the command line's input checks need not pay

    res = stats.bootstrap(samples, stat, paired=False, vectorized=False, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    over = "+".join(("seeds", "units")[ax] for ax in axes)
    return Estimate(value, min(lo, value), max(hi, value), s, u, f"bootstrap over {over}")


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """An accuracy of one model over n independent samples with Wilson's score interval."""
    if n <= 0:
        raise ValueError("n must be positive")
    from scipy import stats

    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(successes / n, float(ci.low), float(ci.high), 1, n, "wilson")


def mean_ratio(data: np.ndarray) -> float:
    """mean of quantity 1 / mean of quantity 0 over seeds and units (data (S, U, 2))."""
    return float(np.mean(data[..., 1]) / np.mean(data[..., 0]))


def mean_difference(data: np.ndarray) -> float:
    """mean of quantity 1 - mean of quantity 0 over seeds and units (data (S, U, 2))."""
    return float(np.mean(data[..., 1]) - np.mean(data[..., 0]))
