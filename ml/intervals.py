"""Percentile-bootstrap confidence intervals of per-user means (ml/README.md "Intervals"):
each resample draws the judged users with replacement; the interval is the (1 - level) / 2 and
(1 + level) / 2 quantiles of the resampled means. `difference(a, b)` is paired: it resamples
users, not values, so the users' shared ease or difficulty cancels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
CHUNK_VALUES = 4_000_000  # drawn user indices held at once (16 MB)
K = TypeVar("K")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def excludes(self, value: float = 0.0) -> bool:
        """Whether `value` lies outside the interval (a difference with 0 outside is real)."""
        return not self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}]"


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, columns) means of `values` (users x columns) over users drawn with
    replacement, the same users for every column; NaN entries are left out of a mean. Each
    column's resamples are the same whichever columns it is drawn with, so intervals of
    several columns cost one set of draws."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    missing = np.isnan(values)
    filled = np.where(missing, 0.0, values)
    gappy = np.flatnonzero(missing.any(axis=0))  # columns with a NaN: their own counts
    present = (~missing[:, gappy]).astype(np.float64)
    del missing
    out = np.empty((resamples, values.shape[1]))
    chunk = max(1, CHUNK_VALUES // max(n, 1))
    # the draws as int32 are the same numbers as the default int64 (numpy draws any range
    # below 2**32 from 32-bit words), in half the memory
    dtype = np.int32 if n < 2**31 else np.int64
    weights = np.empty((min(chunk, resamples), n))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n, (size, n), dtype=dtype)
        # how often each user is drawn in each resample: a multinomial weights matrix
        for row in range(size):
            weights[row] = np.bincount(drawn[row], minlength=n)
        del drawn
        block = weights[:size]
        totals = block @ filled
        counts = np.full(totals.shape, float(n))  # every user counted: n draws per resample
        counts[:, gappy] = block @ present
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + size] = totals / counts
    return out


def intervals(
    columns: Mapping[K, np.ndarray],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[K, Interval]:
    """The interval of each column's mean (arrays aligned over the same users), on shared
    resamples of users; NaN entries (a metric undefined for a user) are left out."""
    names = list(columns)
    if not names:
        return {}
    values = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in names])
    nan = Interval(float("nan"), float("nan"), float("nan"))
    if values.shape[0] == 0:
        return dict.fromkeys(names, nan)
    means = bootstrap_means(values, resamples, seed)
    tail = (1 - level) / 2
    out = {}
    for column, name in enumerate(names):
        kept = values[~np.isnan(values[:, column]), column]
        if len(kept) == 0:
            out[name] = nan
            continue
        low, high = np.nanquantile(means[:, column], [tail, 1 - tail])
        out[name] = Interval(float(kept.mean()), float(low), float(high))
    return out


def interval(
    values: np.ndarray, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
) -> Interval:
    """The interval of the mean of per-user `values`."""
    return intervals({"": values}, resamples=resamples, level=level, seed=seed)[""]


def difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> Interval:
    """The interval of mean(a - b), a and b aligned over the same users (paired)."""
    return differences({"": (a, b)}, resamples=resamples, level=level, seed=seed)[""]


def differences(
    pairs: Mapping[K, tuple[np.ndarray, np.ndarray]],
    *,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[K, Interval]:
    """`difference(a, b)` of every pair (all aligned over the same users), on one set of
    resamples: what separate calls give (the same draws), for the cost of one."""
    columns = {}
    for key, (a, b) in pairs.items():
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"a and b must hold the same users ({a.shape} vs {b.shape})")
        columns[key] = a - b
    return intervals(columns, resamples=resamples, level=level, seed=seed)
