"""Per-column checksums of a mart, engine-neutral: the same rows give the same digests whether
they come from Postgres (psycopg) or Spark (Arrow).

Values are normalised before hashing: floats rounded to 9 digits, timestamps in UTC, arrays as
tuples, and the instants that stand for an ingestion run (the scd2 boundary: Postgres'
`_dlt_valid_from`, the lake's `_snapshot_at`, which two separate ingestions cannot share) as
`run #k`, the run's rank.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any


def normalise(value: Any, boundaries: Sequence[datetime]) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, datetime):
        instant = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if instant in boundaries:
            return f"run #{boundaries.index(instant) + 1}"
        return instant.isoformat()
    if isinstance(value, list | tuple):
        return tuple(normalise(v, boundaries) for v in value)
    return value


def utc_boundaries(instants: Iterable[datetime]) -> list[datetime]:
    """The runs' boundaries, in UTC, in order."""
    return sorted({(i.astimezone(UTC) if i.tzinfo else i.replace(tzinfo=UTC)) for i in instants})


def column_digests(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], boundaries: Sequence[datetime]
) -> dict[str, str]:
    """column -> digest of its sorted normalised values; `*rows*` -> digest of the sorted rows;
    `*count*` -> the number of rows."""
    table = [tuple(normalise(v, boundaries) for v in row) for row in rows]
    digests = {"*count*": str(len(table))}
    for index, column in enumerate(columns):
        values = sorted(repr(row[index]) for row in table)
        digests[column] = hashlib.sha256("\n".join(values).encode()).hexdigest()[:16]
    ordered = sorted(repr(row) for row in table)
    digests["*rows*"] = hashlib.sha256("\n".join(ordered).encode()).hexdigest()[:16]
    return digests
