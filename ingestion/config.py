"""Ingestion's knobs, with their defaults. The CLI (`python -m ingestion --help`) sets them.

The two caps on what the (untrusted) API may send also come from the environment, so the daily
run honours them: INGESTION_MAX_RESPONSE_MB (default 50: a larger response fails the run) and
INGESTION_MAX_FIELD_KB (default 64: a longer string field rejects its record).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ingestion.moovitamix_source.client import RetryPolicy, Timeouts
from ingestion.moovitamix_source.contract import PAGE_SIZE

MAX_RESPONSE_MB_ENV = "INGESTION_MAX_RESPONSE_MB"
MAX_FIELD_KB_ENV = "INGESTION_MAX_FIELD_KB"
DEFAULT_MAX_RESPONSE_MB = 50
DEFAULT_MAX_FIELD_KB = 64


def _env_size(name: str, default: float, unit: int) -> int:
    """`name` from the environment (a number of `unit`s; unset or empty: `default`) in bytes."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    return int(value * unit)


def max_response_bytes_default() -> int:
    return _env_size(MAX_RESPONSE_MB_ENV, DEFAULT_MAX_RESPONSE_MB, 2**20)


def max_field_bytes_default() -> int:
    return _env_size(MAX_FIELD_KB_ENV, DEFAULT_MAX_FIELD_KB, 2**10)


# Pages in flight per endpoint. Tuned by bench/bench_ingestion.py (see bench/results/).
DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class IngestionConfig:
    concurrency: int = DEFAULT_CONCURRENCY
    page_size: int = PAGE_SIZE
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 6  # per page, first try included
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0
    max_reject_share: float = 0.01  # per endpoint; above it the run fails
    rereads: int = 1  # re-reads of an endpoint whose records do not add up
    progress: bool | None = None  # progress bars; None: when stderr is a terminal
    # A response larger than this fails the run (read with the limit, never whole first).
    max_response_bytes: int = field(default_factory=max_response_bytes_default)
    # A string field (or a new field's JSON) longer than this rejects its record.
    max_field_bytes: int = field(default_factory=max_field_bytes_default)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not 1 <= self.page_size <= PAGE_SIZE:
            raise ValueError(f"page size must be within 1..{PAGE_SIZE}")
        if self.max_attempts < 1:
            raise ValueError("max attempts must be >= 1")
        if not 0 <= self.max_reject_share <= 1:
            raise ValueError("the reject share is between 0 and 1")
        if self.max_response_bytes < 1024:
            raise ValueError("the response cap must be >= 1 KB")
        if self.max_field_bytes < 1:
            raise ValueError("the field cap must be >= 1 byte")

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            retry_after_max_s=self.retry_after_max_s,
        )

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(connect_s=self.connect_timeout_s, read_s=self.read_timeout_s)
