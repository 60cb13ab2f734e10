"""Postgres binary COPY <-> numpy: no Python object per row.

A binary COPY tuple is `int16 field count`, then per field `int32 length` + big-endian data.
Writing: when every field has a fixed width (bigint, integer, double, a text of known length)
a tuple is a numpy structured record, so a million rows are one `tobytes`. Reading: Postgres
sends one protocol message per row, so the reader asks the server to pack many records into
each row (ml.interactions) and only walks a few hundred rows here.
See https://www.postgresql.org/docs/current/sql-copy.html (Binary Format).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

import numpy as np

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"  # flags 0, no header extension
TRAILER = b"\xff\xff"
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# Postgres type -> big-endian numpy format of its binary send format.
INT8, INT4, FLOAT8, TIMESTAMPTZ = ">i8", ">i4", ">f8", ">i8"

Column = tuple[str, str]  # (name, numpy format), e.g. ("user_id", INT8) or ("source", "S3")


class CopyFormatError(ValueError):
    """The binary COPY stream is not what the columns say (NULL, other type, truncated)."""


def tuple_dtype(columns: Sequence[Column]) -> np.dtype:
    parts: list[tuple[str, str]] = [("_fields", ">i2")]
    for name, fmt in columns:
        parts += [(f"_len_{name}", ">i4"), (name, fmt)]
    return np.dtype(parts)


def timestamptz(value: datetime) -> int:
    """A timestamptz in COPY's binary form: microseconds since 2000-01-01 UTC."""
    delta = value.astimezone(UTC) - PG_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode(columns: Sequence[Column], values: Mapping[str, object], n_rows: int) -> bytes:
    """n_rows tuples (no header/trailer); each value an array of n_rows or one scalar for all."""
    dtype = tuple_dtype(columns)
    block = np.empty(n_rows, dtype=dtype)
    block["_fields"] = len(columns)
    for name, fmt in columns:
        block[f"_len_{name}"] = np.dtype(fmt).itemsize
        value = values[name]
        if isinstance(value, str):
            value = value.encode("utf-8")
            if len(value) != np.dtype(fmt).itemsize:
                raise ValueError(f"text {name!r} is {len(value)} bytes, column says {fmt}")
        block[name] = value
    return block.tobytes()


def single_field_rows(chunks: Iterable[bytes | memoryview]) -> Iterator[memoryview]:
    """The field of each row of a binary COPY of one non-null variable-length column (a bytea,
    say): for a few large rows that each pack many records (see ml.interactions).

    Reads `chunks` to its end, so the connection is ready for the next command afterwards."""
    buffer = bytearray()
    at = 0
    header_done = ended = False
    for chunk in chunks:
        if ended:
            raise CopyFormatError("data after the binary COPY trailer")
        buffer += chunk
        if not header_done:
            if len(buffer) < len(HEADER):
                continue
            if bytes(buffer[: len(SIGNATURE)]) != SIGNATURE:
                raise CopyFormatError("not a binary COPY stream (bad signature)")
            at = len(HEADER) + int.from_bytes(buffer[15:19], "big")
            header_done = True
        while not ended and len(buffer) - at >= 2:
            fields = int.from_bytes(buffer[at : at + 2], "big", signed=True)
            if fields == -1:
                ended = True
                break
            if fields != 1:
                raise CopyFormatError(f"expected 1 field per row, got {fields}")
            if len(buffer) - at < 6:
                break
            length = int.from_bytes(buffer[at + 2 : at + 6], "big", signed=True)
            if length < 0:
                raise CopyFormatError("unexpected NULL field")
            if len(buffer) - at < 6 + length:
                break
            yield memoryview(bytes(buffer[at + 6 : at + 6 + length]))
            at += 6 + length
        if at > (1 << 20):  # drop what was consumed, now and then
            del buffer[:at]
            at = 0
    if not ended:
        raise CopyFormatError("binary COPY stream ended without its trailer")
