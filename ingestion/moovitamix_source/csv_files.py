"""Arrow batches -> the CSV files dlt loads as they are (`dlt.mark.with_file_import`).

dlt would write Arrow items as parquet during extract, then rewrite them as CSV in normalize;
the rows go straight to the CSV that Postgres' COPY reads instead (same writer settings as
dlt's own CSV writer: a quoted header, values quoted where needed, `_dlt_load_id` filled in).
A table's rows go to files of at most `max_rows` rows (a big table loads as parallel COPYs);
a batch with other columns (a new field appeared) starts a new file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

LOAD_ID = "_dlt_load_id"
_OPTIONS = pacsv.WriteOptions(include_header=False, quoting_style="needed")


def _csv_ready(rows: pa.Table) -> pa.Table:
    """`rows` with its UTC timestamps as text, written as Arrow writes them ("...000000Z"):
    Arrow's CSV writer formats a zoned timestamp ~10x slower than a naive one plus "Z"."""
    for i, f in enumerate(rows.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz in ("UTC", "+00:00"):
            naive = rows.column(i).cast(pa.timestamp(f.type.unit))
            text = pc.binary_join_element_wise(naive.cast(pa.string()), "Z", "")
            rows = rows.set_column(i, pa.field(f.name, pa.string(), f.nullable), text)
    return rows


@dataclass(frozen=True)
class CsvFile:
    table: str
    path: Path
    rows: int
    schema: pa.Schema  # of the rows in the file
    json_columns: tuple[str, ...]  # columns holding JSON text (new API fields)


class _OpenFile:
    def __init__(self, path: Path, schema: pa.Schema, json_columns: tuple[str, ...]) -> None:
        self.path = path
        self.schema = schema
        self.json_columns = json_columns
        self.rows = 0
        self.handle = path.open("wb")
        self.handle.write((",".join(f'"{name}"' for name in schema.names) + "\n").encode())
        self.writer = pacsv.CSVWriter(
            self.handle, _csv_ready(schema.empty_table()).schema, write_options=_OPTIONS
        )

    def close(self, table: str) -> CsvFile:
        self.writer.close()
        self.handle.close()
        return CsvFile(table, self.path, self.rows, self.schema, self.json_columns)


class CsvFiles:
    """The CSV files of one endpoint's tables, under `directory`, for the load `load_id`."""

    def __init__(self, directory: Path, load_id: str, max_rows: int = 500_000) -> None:
        self.directory = directory
        self.load_id = load_id
        self.max_rows = max_rows
        self.closed: list[CsvFile] = []
        self._open: dict[str, _OpenFile] = {}
        self._count = 0
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, table: str, rows: pa.Table, json_columns: tuple[str, ...] = ()) -> None:
        """Append `rows` to `table`'s file (a table with no rows still gets a file: a header)."""
        rows = rows.append_column(
            pa.field(LOAD_ID, pa.string(), nullable=False),
            pa.repeat(pa.scalar(self.load_id, pa.string()), rows.num_rows),
        )
        current = self._open.get(table)
        if current is not None and (
            not current.schema.equals(rows.schema) or current.rows >= self.max_rows
        ):
            self.closed.append(self._open.pop(table).close(table))
            current = None
        if current is None:
            self._count += 1
            path = self.directory / f"{table}.{self._count}.csv"
            current = self._open[table] = _OpenFile(path, rows.schema, tuple(json_columns))
        if rows.num_rows:
            current.writer.write_table(_csv_ready(rows))
            current.rows += rows.num_rows

    def close(self) -> list[CsvFile]:
        """Close every file; all the files written, in order."""
        for table in list(self._open):
            self.closed.append(self._open.pop(table).close(table))
        return self.closed

    def discard(self) -> None:
        """Close and delete every file, as far as possible (it runs while a failure is being
        reported: a file whose writer failed must not stop the others from going)."""
        for file in self._open.values():
            for close in (file.writer.close, file.handle.close):
                with contextlib.suppress(Exception):
                    close()
        self._open.clear()
        for path in self.directory.glob("*.csv"):
            with contextlib.suppress(OSError):
                path.unlink()
