"""Ingestion's knobs, with their defaults; the CLI (`python -m ingestion --help`) sets them.

The two caps on what the (untrusted) API may send also come from the environment, so the daily
run honours them: INGESTION_MAX_RESPONSE_MB (default 50: a larger response fails the run) and
INGESTION_MAX_FIELD_KB (default 64: a longer string field rejects its record).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

MAX_RESPONSE_MB_ENV = "INGESTION_MAX_RESPONSE_MB"
MAX_FIELD_KB_ENV = "INGESTION_MAX_FIELD_KB"
DEFAULT_MAX_RESPONSE_MB = 50
DEFAULT_MAX_FIELD_KB = 64
PAGE_SIZE = 100  # the contract's maximum page size
DEFAULT_CONCURRENCY = 8  # pages in flight (dlt's extract workers); see bench/results/


def _env_size(name: str, default: float, unit: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int((float(raw) if raw else default) * unit)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None


@dataclass(frozen=True)
class IngestionConfig:
    concurrency: int = DEFAULT_CONCURRENCY
    page_size: int = PAGE_SIZE
    pages_per_task: int = 25  # pages one deferred dlt task fetches and turns into Arrow tables
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 6  # per page, first try included
    backoff_base_s: float = 0.5  # dlt's request_backoff_factor: 0.5, 1, 2, ... s
    max_retry_delay_s: float = 30.0  # caps the backoff and a Retry-After
    max_reject_share: float = 0.01  # per endpoint; above it the run fails
    rereads: int = 1  # re-reads of a run whose records do not add up
    progress: bool | None = None  # progress bars; None: when stderr is a terminal
    max_response_bytes: int = field(
        default_factory=lambda: _env_size(MAX_RESPONSE_MB_ENV, DEFAULT_MAX_RESPONSE_MB, 2**20)
    )
    max_field_bytes: int = field(
        default_factory=lambda: _env_size(MAX_FIELD_KB_ENV, DEFAULT_MAX_FIELD_KB, 2**10)
    )

    def __post_init__(self) -> None:
        checks = {
            "concurrency must be >= 1": self.concurrency >= 1,
            f"page size must be within 1..{PAGE_SIZE}": 1 <= self.page_size <= PAGE_SIZE,
            "max attempts must be >= 1": self.max_attempts >= 1,
            "the reject share is between 0 and 1": 0 <= self.max_reject_share <= 1,
            "the response cap must be >= 1 KB": self.max_response_bytes >= 1024,
            "the field cap must be >= 1 byte": self.max_field_bytes >= 1,
        }
        for message, ok in checks.items():
            if not ok:
                raise ValueError(message)
