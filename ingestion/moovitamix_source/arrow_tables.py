"""Arrow batches -> the tables the lake's resources hand dlt as they are (dlt's Arrow path:
extract writes them to Parquet, normalize has nothing to rewrite, the filesystem destination
copies the files). The twin of `csv_files` for destinations that are not Postgres.

Every row gets `_dlt_load_id` (the load package's id, as on the Postgres path) and
`_snapshot_at` (the run's boundary: the instant the snapshot stands for). The tables of a read
are held until the read adds up: a read that does not is dropped whole, nothing of it reaches
dlt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
    rows: int
    data: pa.Table


class ArrowTables:
    """The Arrow tables of one endpoint's read, for the load `load_id` of the snapshot taken
    at `snapshot_at` (same interface as `CsvFiles`)."""

    def __init__(self, load_id: str, snapshot_at: datetime) -> None:
        self.load_id = load_id
        self.snapshot_at = snapshot_at
        self.closed: list[ArrowPart] = []

    def write(self, table: str, rows: pa.Table, json_columns: tuple[str, ...] = ()) -> None:
        """Keep `rows` of `table` (new fields stay JSON text; an empty table is kept too: its
        table then exists in the lake even when no row ever came)."""
        n = rows.num_rows
        rows = rows.append_column(
            pa.field(LOAD_ID, pa.string(), nullable=False),
            pa.repeat(pa.scalar(self.load_id, pa.string()), n),
        ).append_column(
            pa.field(SNAPSHOT_AT, TIMESTAMP, nullable=False),
            pa.repeat(pa.scalar(self.snapshot_at, TIMESTAMP), n),
        )
        self.closed.append(ArrowPart(table, n, rows))

    def close(self) -> list[ArrowPart]:
        return self.closed

    def discard(self) -> None:
        self.closed = []
