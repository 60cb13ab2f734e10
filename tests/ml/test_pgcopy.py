from datetime import UTC, datetime

import numpy as np
import pytest

from ml.pgcopy import (
    FLOAT8,
    HEADER,
    INT4,
    INT8,
    TRAILER,
    CopyFormatError,
    encode,
    single_field_rows,
    timestamptz,
)
from moovitamix.warehouse import connect


def _bytea_stream(fields: list[bytes]) -> bytes:
    rows = b"".join((1).to_bytes(2, "big") + len(f).to_bytes(4, "big") + f for f in fields)
    return HEADER + rows + TRAILER


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
def test_single_field_rows_in_any_chunking(chunk: int) -> None:
    fields = [b"", b"abc", bytes(range(256)) * 50]
    data = _bytea_stream(fields)
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    assert [bytes(f) for f in single_field_rows(chunks)] == fields


def test_single_field_rows_rejects_broken_streams() -> None:
    data = _bytea_stream([b"abc"])
    with pytest.raises(CopyFormatError, match="without its trailer"):
        list(single_field_rows([data[:-2]]))
    with pytest.raises(CopyFormatError, match="signature"):
        list(single_field_rows([b"x" * 40]))
    two_fields = HEADER + (2).to_bytes(2, "big") + b"\x00" * 20 + TRAILER
    with pytest.raises(CopyFormatError, match="1 field"):
        list(single_field_rows([two_fields]))
    null = HEADER + (1).to_bytes(2, "big") + (-1).to_bytes(4, "big", signed=True) + TRAILER
    with pytest.raises(CopyFormatError, match="NULL"):
        list(single_field_rows([null]))


@pytest.mark.integration
def test_postgres_reads_what_encode_writes(fresh_warehouse) -> None:
    n = 1000
    at = datetime(2026, 11, 26, 12, 30, 15, 123456, tzinfo=UTC)
    columns = [("a", INT8), ("b", INT4), ("c", FLOAT8), ("s", "S3"), ("t", INT8)]
    values = {
        "a": np.arange(n, dtype=np.int64) * 10**12,
        "b": -np.arange(n, dtype=np.int32),
        "c": np.linspace(-1, 1, n),
        "s": "als",
        "t": timestamptz(at),
    }
    with connect(fresh_warehouse) as conn:
        conn.execute("create table t (a bigint, b int, c double precision, s text, t timestamptz)")
        with conn.cursor() as cur, cur.copy("copy t from stdin (format binary)") as copy:
            copy.write(HEADER + encode(columns, values, n) + TRAILER)
        rows = conn.execute("select a, b, c, s, t from t order by a").fetchall()
    assert [r[0] for r in rows] == values["a"].tolist()
    assert [r[1] for r in rows] == values["b"].tolist()
    assert [r[2] for r in rows] == values["c"].tolist()
    assert {(r[3], r[4]) for r in rows} == {("als", at)}
