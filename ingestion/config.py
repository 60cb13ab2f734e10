"""Ingestion's knobs, with their defaults. The CLI (`python -m ingestion --help`) sets them."""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.moovitamix_source.client import RetryPolicy, Timeouts
from ingestion.moovitamix_source.contract import PAGE_SIZE

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

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not 1 <= self.page_size <= PAGE_SIZE:
            raise ValueError(f"page size must be within 1..{PAGE_SIZE}")
        if self.max_attempts < 1:
            raise ValueError("max attempts must be >= 1")
        if not 0 <= self.max_reject_share <= 1:
            raise ValueError("the reject share is between 0 and 1")

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
