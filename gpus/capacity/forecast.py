"""Days until a GPU model runs out, from the allocation trend: a Theil-Sen fit (the median of
the slopes between every pair of points, robust to spikes) over the last 14 days, with the
rank-based 95 % interval of its slope (Sen 1968). Pure: no Django."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WINDOW_DAYS = 14
# Below this, the trend says nothing: "not enough history".
MIN_SPAN_DAYS = 3.0
MIN_POINTS = 24  # hourly points, or every second hour (the page)
Z95 = 1.959964


@dataclass(frozen=True)
class Fit:
    slope: float  # per day
    slope_low: float
    slope_high: float
    intercept: float  # value at t = 0 (days)

    def at(self, t: float) -> float:
        return self.intercept + self.slope * t


def theil_sen(t: np.ndarray, y: np.ndarray) -> Fit:
    """Sen's slope with its 95 % interval; ``t`` in days. Ties in t are skipped."""
    i, j = np.triu_indices(len(t), k=1)
    dt_ = t[j] - t[i]
    keep = dt_ != 0
    slopes = np.sort((y[j] - y[i])[keep] / dt_[keep])
    n_pairs = len(slopes)
    slope = float(np.median(slopes))
    n = len(t)
    # Rank-based interval: C = z * sqrt(Var(S)), Var(S) = n(n-1)(2n+5)/18 (no tie correction).
    c = Z95 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    low_rank = max(math.floor((n_pairs - c) / 2), 0)
    high_rank = min(math.ceil((n_pairs + c) / 2), n_pairs - 1)
    intercept = float(np.median(y - slope * t))
    return Fit(slope, float(slopes[low_rank]), float(slopes[high_rank]), intercept)


@dataclass(frozen=True)
class Exhaustion:
    enough_history: bool
    days: float | None = None  # None: not running out at this trend
    days_low: float | None = None  # earliest (steepest slope in the interval)
    days_high: float | None = None  # latest; None = maybe never
    slope_per_day: float = 0.0
    points: int = 0

    @property
    def running_out(self) -> bool:
        return self.days is not None


def days_to_exhaustion(t: list[float], allocated: list[float], installed: float) -> Exhaustion:
    """``t`` in days (the last point is now), ``allocated`` at those times, ``installed`` now."""
    if len(t) < MIN_POINTS or (max(t) - min(t)) < MIN_SPAN_DAYS:
        return Exhaustion(enough_history=False, points=len(t))
    ta = np.asarray(t, dtype=float)
    fit = theil_sen(ta, np.asarray(allocated, dtype=float))
    now = float(ta.max())
    headroom = max(installed - fit.at(now), 0.0)

    def days(slope: float) -> float | None:
        if slope <= 1e-9:
            return None
        return headroom / slope

    return Exhaustion(
        enough_history=True,
        days=days(fit.slope),
        days_low=days(fit.slope_high),
        days_high=days(fit.slope_low),
        slope_per_day=fit.slope,
        points=len(t),
    )
