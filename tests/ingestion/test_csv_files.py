"""The CSV files dlt imports as they are: what Postgres' COPY reads (header, quoting, NULLs,
timestamps, `_dlt_load_id`), and how rows are split into files."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from ingestion.moovitamix_source.contract import ITEMS_SCHEMA, REJECTED_SCHEMA, TIMESTAMP
from ingestion.moovitamix_source.csv_files import LOAD_ID, CsvFiles
from ingestion.moovitamix_source.records import dlt_ids


def read(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def items(n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "record_hash": ["ab" * 16] * n,
            "user_id": list(range(start, start + n)),
            "position": pa.array(range(n), pa.int32()),
            "track_id": [7] * n,
        },
        schema=ITEMS_SCHEMA,
    )


def test_rows_header_and_load_id(tmp_path: Path) -> None:
    files = CsvFiles(tmp_path, "1764175658.717661", max_rows=1000)
    files.write("listen_history__items", items(3))
    [file] = files.close()
    assert file.rows == 3 and file.table == "listen_history__items"
    rows = read(file.path)
    assert rows[0] == [*ITEMS_SCHEMA.names, LOAD_ID]
    assert rows[1] == ["ab" * 16, "0", "0", "7", "1764175658.717661"]
    assert file.path.read_text().startswith('"record_hash","user_id"')  # dlt's header style


def test_values_as_copy_reads_them(tmp_path: Path) -> None:
    at = datetime(2025, 3, 11, 4, 5, 17, 576142, tzinfo=UTC)
    rejected = pa.table(
        {
            "endpoint": ["tracks", "tracks"],
            "page": pa.array([1, 2], pa.int32()),
            "record_key": [None, ""],
            "payload": ['{"a": "x,\\"y\\"\\nz"}', ""],
            "reason": ["r", "r"],
            "run_id": ["run", "run"],
            "rejected_at": pa.array([at, at], TIMESTAMP),
        },
        schema=REJECTED_SCHEMA,
    )
    files = CsvFiles(tmp_path, "1")
    files.write("_rejected", rejected)
    [file] = files.close()
    lines = file.path.read_text().splitlines()
    assert lines[1].startswith('"tracks",1,,')  # null: empty and unquoted
    assert ',"2025-03-11 04:05:17.576142Z",' in lines[1]  # an explicit UTC timestamp
    assert lines[-1].startswith('"tracks",2,"",""')  # empty string: quoted (not NULL)
    assert read(file.path)[1][3] == '{"a": "x,\\"y\\"\\nz"}'


def test_files_are_split_by_rows_and_by_columns(tmp_path: Path) -> None:
    files = CsvFiles(tmp_path, "1", max_rows=5)
    files.write("listen_history__items", items(3))
    files.write("listen_history__items", items(3, 3))  # 6 rows: the file is full
    files.write("listen_history__items", items(2, 6))
    files.write("_rejected", REJECTED_SCHEMA.empty_table())  # no rows: still a file
    wider = items(1, 8).append_column("mood", pa.array(['"happy"']))
    files.write("listen_history__items", wider)  # other columns: another file
    closed = files.close()
    by_table = [(f.table, f.rows, f.json_columns) for f in closed]
    assert sorted(by_table) == sorted(
        [
            ("listen_history__items", 6, ()),
            ("listen_history__items", 2, ()),
            ("listen_history__items", 1, ()),
            ("_rejected", 0, ()),
        ]
    )
    assert read(next(f.path for f in closed if f.table == "_rejected")) == [
        [*REJECTED_SCHEMA.names, LOAD_ID]
    ]
    user_ids = [
        int(row[1])
        for f in closed
        if f.table == "listen_history__items"
        for row in read(f.path)[1:]
    ]
    assert sorted(user_ids) == list(range(9))


def test_discard_removes_the_files(tmp_path: Path) -> None:
    files = CsvFiles(tmp_path / "d", "1")
    files.write("listen_history__items", items(3))
    files.discard()
    assert list((tmp_path / "d").iterdir()) == []


def test_dlt_ids_are_unique_strings() -> None:
    ids = dlt_ids(50_000).to_pylist()
    assert len(set(ids)) == 50_000
    assert {len(i) for i in ids} == {16}
    assert dlt_ids(0).to_pylist() == []
