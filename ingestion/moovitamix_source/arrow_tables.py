"""Arrow batches -> the tables the lake's resources hand dlt as they are (dlt's Arrow path:
extract writes them to Parquet, normalize has nothing to rewrite, the filesystem destination
copies the files). The twin of `csv_files` for destinations that are not Postgres.

Every row gets `_dlt_load_id` (the load package's id, as on the Postgres path) and
`_snapshot_at` (the run's boundary: the instant the snapshot stands for). A read's rows wait
in Arrow IPC files until the read adds up (a read that does not is dropped whole, nothing of
it reaches dlt), so memory stays flat; dlt then gets them memory-mapped, without a copy.
A batch with other columns (a new field appeared) starts a new file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from ingestion.moovitamix_source.contract import TIMESTAMP
from ingestion.moovitamix_source.csv_files import LOAD_ID

SNAPSHOT_AT = "_snapshot_at"


def snapshot_columns(schema: pa.Schema) -> pa.Schema:
    """`schema` with the two columns every lake row carries."""
    return schema.append(pa.field(LOAD_ID, pa.string(), nullable=False)).append(
        pa.field(SNAPSHOT_AT, TIMESTAMP, nullable=False)
    )


@dataclass(frozen=True)
class ArrowPart:
    table: str
    path: Path
    rows: int

    def batches(self) -> Iterator[pa.Table]:
        """The file's rows, memory-mapped (an empty file: one empty table, for its schema)."""
        with pa.memory_map(str(self.path)) as source:
            yield pa.ipc.open_file(source).read_all()


class _OpenPart:
    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_file(self.sink, schema)

    def close(self, table: str) -> ArrowPart:
        self.writer.close()
        self.sink.close()
        return ArrowPart(table, self.path, self.rows)


class ArrowTables:
    """The Arrow files of one endpoint's tables, under `directory`, for the load `load_id` of
    the snapshot taken at `snapshot_at` (same interface as `CsvFiles`)."""

    def __init__(self, directory: Path, load_id: str, snapshot_at: datetime) -> None:
        self.directory = directory
        self.load_id = load_id
        self.snapshot_at = snapshot_at
        self.closed: list[ArrowPart] = []
        self._open: dict[str, _OpenPart] = {}
        self._count = 0
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, table: str, rows: pa.Table, json_columns: tuple[str, ...] = ()) -> None:
        """Append `rows` to `table`'s file (new fields stay JSON text; a table with no rows
        still gets a file: its table then exists in the lake even when no row ever came)."""
        n = rows.num_rows
        rows = rows.append_column(
            pa.field(LOAD_ID, pa.string(), nullable=False),
            pa.repeat(pa.scalar(self.load_id, pa.string()), n),
        ).append_column(
            pa.field(SNAPSHOT_AT, TIMESTAMP, nullable=False),
            pa.repeat(pa.scalar(self.snapshot_at, TIMESTAMP), n),
        )
        current = self._open.get(table)
        if current is not None and not current.schema.equals(rows.schema):
            self.closed.append(self._open.pop(table).close(table))
            current = None
        if current is None:
            self._count += 1
            path = self.directory / f"{table}.{self._count}.arrow"
            current = self._open[table] = _OpenPart(path, rows.schema)
        if n:
            current.writer.write_table(rows)
            current.rows += n

    def close(self) -> list[ArrowPart]:
        """Close every file; all the files written, in order."""
        for table in list(self._open):
            self.closed.append(self._open.pop(table).close(table))
        return self.closed

    def discard(self) -> None:
        """Close and delete every file, as far as possible."""
        for part in self._open.values():
            for close in (part.writer.close, part.sink.close):
                with contextlib.suppress(Exception):
                    close()
        self._open.clear()
        for path in self.directory.glob("*.arrow"):
            with contextlib.suppress(OSError):
                path.unlink()
