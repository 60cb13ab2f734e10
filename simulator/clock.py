"""Simulated time: day 0 is anchored on a fixed date, day N is N days later.

Timestamps are int64 microseconds since the Unix epoch (naive, read as UTC) and are rendered as
ISO 8601 without timezone, always with six fractional digits.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

ANCHOR = datetime(2026, 1, 1)
SECOND_US = 1_000_000
DAY_US = 86_400 * SECOND_US
YEAR_US = 365 * DAY_US
ANCHOR_US = int((ANCHOR - datetime(1970, 1, 1)).total_seconds()) * SECOND_US


def snapshot_us(day: int) -> int:
    """The moment the day-`day` snapshot is taken: every timestamp it serves is before it."""
    return ANCHOR_US + day * DAY_US


def day_window(day: int) -> tuple[int, int]:
    """[start, end) of the changes that day `day` (>= 1) brings."""
    return snapshot_us(day - 1), snapshot_us(day)


def with_microseconds(us: np.ndarray) -> np.ndarray:
    """Move values with .000000 by one microsecond so every rendering has six digits."""
    us = us.astype(np.int64, copy=False)
    return us + (us % SECOND_US == 0)


def in_range(
    rng: np.random.Generator, low: np.ndarray | int, high: np.ndarray | int, n: int
) -> np.ndarray:
    """n timestamps uniform in [low, high) (element-wise bounds allowed)."""
    low_a = np.asarray(low, dtype=np.int64)
    span = np.maximum(np.asarray(high, dtype=np.int64) - low_a, 1)
    return with_microseconds(low_a + (rng.random(n) * span).astype(np.int64))


def render(us: np.ndarray) -> list[str]:
    """ISO 8601 strings, e.g. 2025-03-11T04:05:17.576142."""
    return np.datetime_as_string(us.astype("datetime64[us]"), unit="us").tolist()
