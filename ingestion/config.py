"""Ingestion's knobs, checked by Pydantic; the CLI sets them, the caps on the untrusted API also
INGESTION_MAX_RESPONSE_MB and INGESTION_MAX_FIELD_KB (README.md, "Untrusted input")."""

from __future__ import annotations

import os
from dataclasses import field
from typing import Annotated

from pydantic import Field
from pydantic.dataclasses import dataclass

MAX_RESPONSE_MB_ENV = "INGESTION_MAX_RESPONSE_MB"
MAX_FIELD_KB_ENV = "INGESTION_MAX_FIELD_KB"
PAGE_SIZE = 100  # the contract's maximum page size
DEFAULT_CONCURRENCY = 8  # pages in flight (dlt's extract workers); see bench/results/
Positive = Annotated[int, Field(ge=1)]


def _env_size(name: str, default: float, unit: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int((float(raw) if raw else default) * unit)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None


@dataclass(frozen=True)
class IngestionConfig:
    concurrency: Positive = DEFAULT_CONCURRENCY
    page_size: Annotated[int, Field(ge=1, le=PAGE_SIZE)] = PAGE_SIZE
    pages_per_task: Positive = 25  # pages one deferred dlt task fetches into Arrow tables
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: Positive = 6  # per page, first try included
    backoff_base_s: float = 0.5  # dlt's request_backoff_factor: 0.5, 1, 2, ... s
    max_retry_delay_s: float = 30.0  # caps the backoff and a Retry-After
    max_reject_share: Annotated[float, Field(ge=0, le=1)] = 0.01  # per endpoint, else fails
    rereads: int = 1  # re-reads of a run whose records do not add up
    progress: bool | None = None  # progress bars; None: when stderr is a terminal
    max_response_bytes: Annotated[int, Field(ge=1024)] = field(
        default_factory=lambda: _env_size(MAX_RESPONSE_MB_ENV, 50, 2**20)
    )
    max_field_bytes: Positive = field(default_factory=lambda: _env_size(MAX_FIELD_KB_ENV, 64, 1024))
