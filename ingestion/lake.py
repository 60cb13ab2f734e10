"""The lake's side of an ingestion run (`--destination filesystem`, the Spark engine's input):
where the lake is, and the copy of the run's stats each snapshot carries (`raw/_ingestion_stats`,
in the same load)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import dlt
import pyarrow as pa

from ingestion.moovitamix_source.contract import TIMESTAMP
from ingestion.raw_tables import appended
from ingestion.stats import EndpointStats, endpoint_stats
from moovitamix.settings import Settings

if TYPE_CHECKING:
    from ingestion.moovitamix_source import Read, SourceRun

LAKE_LAYOUT = "{table_name}/load_id={load_id}/{file_id}.{ext}"  # hive-style: prune by load
BUCKET_URL_CONFIG = "destination.filesystem.bucket_url"  # env DESTINATION__FILESYSTEM__BUCKET_URL
log = logging.getLogger(__name__)


def lake_bucket_url(settings: Settings, bucket_url: str | None = None) -> str:
    """`bucket_url`, else dlt's own config (DESTINATION__FILESYSTEM__BUCKET_URL or
    .dlt/config.toml), else Settings.lake (LAKE_URL, default data_dir/lake)."""
    configured = bucket_url or dlt.config.get(BUCKET_URL_CONFIG, str)
    if configured and not bucket_url and str(configured) != settings.lake:
        log.warning(
            "loading the lake at %s (dlt's %s), not at %s: the Spark engine's dbt reads LAKE_URL",
            configured,
            BUCKET_URL_CONFIG,
            settings.lake,
        )
    return str(configured or settings.lake)


def lake_destination(settings: Settings, bucket_url: str | None) -> tuple[Any, str]:
    """dlt's filesystem destination into the lake, and the lake's URL."""
    url = lake_bucket_url(settings, bucket_url)
    return dlt.destinations.filesystem(bucket_url=url, layout=LAKE_LAYOUT), url


def _arrow_type(annotation: str) -> pa.DataType:
    """The lake's type of a stats field: its counters and dicts as JSON text."""
    arrow = {"int": pa.int64(), "float": pa.float64(), "datetime": TIMESTAMP}
    return arrow.get(annotation.split(" |")[0], pa.string())


STATS_SCHEMA = pa.schema((f.name, _arrow_type(str(f.type))) for f in fields(EndpointStats))


def stats_table(rows: list[EndpointStats]) -> pa.Table:
    """The rows as a table of the lake (its JSON columns as text)."""
    dicts = [
        {
            c: json.dumps(dict(v), sort_keys=True) if isinstance(v, dict) else v
            for c, v in vars(s).items()
        }
        for s in rows
    ]
    return pa.Table.from_pylist(dicts, schema=STATS_SCHEMA)


def stats_summary(earlier: dict[str, list[Read]]) -> Callable[[SourceRun], pa.Table]:
    """The source's last table in a lake run: the stats of the run's `earlier` reads and its
    latest ones, in the same load."""

    def summary(run: SourceRun) -> pa.Table:
        latest = {name: [*earlier.get(name, []), read] for name, read in run.reads.items()}
        load_id = dlt.current.load_package_state()["load_id"]
        tables = appended(run.reads.values())
        rows = endpoint_stats(run.run_id, latest, run.boundary, tables=tables, load_id=load_id)
        return stats_table(list(rows.values()))

    return summary
