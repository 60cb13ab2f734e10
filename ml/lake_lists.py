"""The lists in the lake, on the Spark engine: each run's lists as Parquet, published as views.

The app reads the Postgres copy (recommendations.*, ml/publish.py); the lake copy is for the
data platform that reads the Spark engine. A run writes its lists beside the published ones:

  <lake>/recommendations/<table>/run_id=<run_id>/part-0.parquet

and its publication points the Spark views `recommendations.<table>` at that folder, last in
the run's publish transaction (moovitamix/publication.py). A failed run's folder is deleted;
after a publish, the folders of all but the newest `keep` runs are.
"""

from __future__ import annotations

import logging
from datetime import datetime

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ml.lists import SimilarTracks, UserTopTracks
from ml.publish import (
    SCHEMA,
    SIMILAR_TRACKS,
    TABLES,
    USER_TOP_TRACKS,
    Columns,
    Table,
    similar_columns,
    user_columns,
)
from moovitamix.errors import one_line
from moovitamix.publication import Publication, PublishFailed
from moovitamix.settings import Settings

log = logging.getLogger(__name__)

RUN_PREFIX = "run_id="


def _arrow(table: Table, columns: Columns, model_run_id: str, at: datetime) -> pa.Table:
    """A list's columns (ml.publish) and the run's two constants, typed as in Postgres."""
    n = len(columns[0])
    stamp = pa.scalar(at, pa.timestamp("us", tz="UTC"))
    arrays = [*map(pa.array, columns), pa.repeat(model_run_id, n), pa.repeat(stamp, n)]
    return pa.table(dict(zip(table.names, arrays, strict=True)))


class LakeLists:
    """One run's lists in the lake: written, then published (views) or discarded."""

    def __init__(self, settings: Settings, run_id: str, keep: int = 3) -> None:
        self.lake = settings.lake.rstrip("/")
        self.settings = settings
        self.run_id = run_id
        self.keep = keep
        self.fs, self.base = pafs.FileSystem.from_uri(self.lake)

    def _folder(self, table: str, run_id: str | None = None) -> str:
        return f"{self.base}/{SCHEMA}/{table}/{RUN_PREFIX}{run_id or self.run_id}"

    def write(
        self,
        user_lists: UserTopTracks,
        similar_lists: SimilarTracks,
        model_run_id: str,
        generated_at: datetime,
    ) -> dict[str, int]:
        """Write both lists under this run's folders; returns rows per table."""
        tables = {
            USER_TOP_TRACKS.name: _arrow(
                USER_TOP_TRACKS, user_columns(user_lists), model_run_id, generated_at
            ),
            SIMILAR_TRACKS.name: _arrow(
                SIMILAR_TRACKS, similar_columns(similar_lists), model_run_id, generated_at
            ),
        }
        for name, table in tables.items():
            folder = self._folder(name)
            self.fs.create_dir(folder, recursive=True)
            pq.write_table(table, f"{folder}/part-0.parquet", filesystem=self.fs)
        log.info("lists of run %s written to %s/%s", self.run_id, self.lake, SCHEMA)
        return {name: table.num_rows for name, table in tables.items()}

    def publish_views(self) -> dict[str, object]:
        """Point the Spark views recommendations.<table> at this run's lists."""
        from moovitamix.spark import spark_session

        spark = spark_session(self.settings)
        try:
            spark.sql(f"create database if not exists {SCHEMA}")
            for table in (t.name for t in TABLES):
                url = f"{self.lake}/{SCHEMA}/{table}/{RUN_PREFIX}{self.run_id}"
                spark.sql(
                    f"create or replace view {SCHEMA}.{table} as select * from parquet.`{url}`"
                )
        except Exception as exc:
            raise PublishFailed(
                f"switching the Spark views of {SCHEMA} failed: {one_line(exc)}"
            ) from None
        return {"lake": f"{self.lake}/{SCHEMA}", "run_id": self.run_id}

    def discard(self) -> None:
        """Delete this run's folders (a failed run's lists are never published)."""
        for table in (t.name for t in TABLES):
            folder = self._folder(table)
            if self.fs.get_file_info(folder).type != pafs.FileType.NotFound:
                self.fs.delete_dir(folder)

    def retain(self) -> None:
        """Delete the folders of all but the newest `keep` runs (run ids sort by time)."""
        for table in (t.name for t in TABLES):
            selector = pafs.FileSelector(f"{self.base}/{SCHEMA}/{table}", allow_not_found=True)
            runs = sorted(
                info.base_name
                for info in self.fs.get_file_info(selector)
                if info.type == pafs.FileType.Directory and info.base_name.startswith(RUN_PREFIX)
            )
            for old in runs[: -self.keep] if self.keep > 0 else []:
                if old != f"{RUN_PREFIX}{self.run_id}":
                    self.fs.delete_dir(f"{self.base}/{SCHEMA}/{table}/{old}")

    def stage(self, publication: Publication) -> None:
        """Register the views switch (last in the publish transaction), retention after the
        commit, and the folders' removal if the run fails."""
        publication.stage(
            "lake lists",
            lambda conn: self.publish_views(),
            after_commit=self.retain,
            discard=lambda conn: self.discard(),
            last=True,
        )
