"""Server-side downsampling that keeps minima and maxima: MinMaxLTTB (tsdownsample)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tsdownsample import MinMaxLTTBDownsampler

MAX_POINTS = 2000


def _floats(y: Sequence[float | None] | np.ndarray) -> np.ndarray:
    if isinstance(y, np.ndarray):
        return y.astype(np.float64, copy=False)
    return np.array([np.nan if v is None else v for v in y], dtype=np.float64)


def downsample(
    x: Sequence[float] | np.ndarray, ys: Sequence[Sequence[float | None]], n: int = MAX_POINTS
) -> tuple[np.ndarray, list[np.ndarray]]:
    """x (epoch seconds, sorted) and lines sharing it, each cut to at most n points. One index
    set per line would misalign shared x; so pick indices on each line and keep their union,
    capped by running on n // len(ys) per line. Gaps (None/NaN) stay gaps."""
    xa = np.asarray(x, dtype=np.float64)
    cols = [_floats(y) for y in ys]
    if xa.size <= n or not cols:
        return xa, cols
    keep: set[int] = {0, xa.size - 1}
    oks = [~np.isnan(col) for col in cols]
    # Keep gap edges so a gap is not bridged by a straight line.
    for ok in oks:
        edges = np.flatnonzero(np.diff(ok.astype(np.int8)) != 0)
        keep.update(edges.tolist())
        keep.update((edges + 1).tolist())
    per = max(4, (n - len(keep)) // len(cols))
    for col, ok in zip(cols, oks, strict=True):
        idx = np.flatnonzero(ok)
        if idx.size <= per:
            keep.update(idx.tolist())
            continue
        picked = MinMaxLTTBDownsampler().downsample(xa[idx], col[idx], n_out=per)
        keep.update(idx[picked].tolist())
    order = np.array(sorted(keep))
    if order.size > n:  # many lines: thin uniformly, keeping first and last
        order = order[np.linspace(0, order.size - 1, n).round().astype(int)]
    return xa[order], [c[order] for c in cols]
