"""The GX file context of expectations/gx/: its warehouse datasource and the suites' assets.

Committed: gx/great_expectations.yml, whose datasource connects through the substitution
`${MVX_GX_CONNECTION_STRING}`; the process sets that variable from the warehouse URL while it
validates, so no connection string is ever written to a file. Everything GX generates (suites'
JSON, validation definitions, the checkpoint, results, data docs) goes to gx/uncommitted/.

The data docs site GX builds loads its scripts and styles from CDNs: `build_docs` follows every
build with the rewrite of expectations.report.data_docs, which makes the site readable offline.

The assets the suites need are declared in code (expectations/suites/); the datasource in the
YAML is brought in line with them, and written only when something changed, so the committed
file stays as it is run after run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import great_expectations as gx
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.data_context import FileDataContext

from expectations.paths import GX_DIR, data_docs_site
from expectations.report.data_docs import make_site_offline
from expectations.suites import AssetSpec
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import apply_offline_defaults, temporary_env

log = logging.getLogger(__name__)

CONNECTION_VARIABLE = "MVX_GX_CONNECTION_STRING"
DATASOURCE = "warehouse"
SPARK_DATASOURCE = "spark"  # the Spark engine's tables (expectations/spark_source.py)
BATCH_DEFINITION = "whole"


@contextmanager
def connection_variable(url: ConnectionURL) -> Iterator[None]:
    """Set the datasource's substitution variable for the duration of a validation."""
    with temporary_env(CONNECTION_VARIABLE, url.sqlalchemy_url()):
        yield


def open_context(gx_dir: Path = GX_DIR) -> FileDataContext:
    apply_offline_defaults()  # GX_ANALYTICS_ENABLED=false, whoever the caller is
    context = gx.get_context(mode="file", context_root_dir=str(gx_dir))
    assert isinstance(context, FileDataContext)
    return context


def build_docs(context: FileDataContext, resource_identifiers: list[Any], gx_dir: Path) -> None:
    """Build the data docs pages of these results and suites, then make the site readable
    offline (GX loads its scripts and styles from CDNs: expectations.report.data_docs)."""
    context.build_data_docs(resource_identifiers=resource_identifiers)
    make_site_offline(data_docs_site(gx_dir))


def _datasource(context: FileDataContext) -> Any:
    try:
        return context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError):
        log.info("adding the %s datasource to %s", DATASOURCE, context.root_directory)
        return context.data_sources.add_postgres(
            DATASOURCE, connection_string="${" + CONNECTION_VARIABLE + "}"
        )


def _matches(asset: Any, spec: AssetSpec) -> bool:
    if spec.query is not None:
        return asset.type == "query" and asset.query == spec.query
    assert spec.table is not None
    schema, table = spec.table.split(".")
    return asset.type == "table" and (asset.schema_name, asset.table_name) == (schema, table)


def _add_asset(datasource: Any, spec: AssetSpec) -> Any:
    if spec.query is not None:
        return datasource.add_query_asset(spec.name, query=spec.query)
    assert spec.table is not None
    schema, table = spec.table.split(".")
    return datasource.add_table_asset(spec.name, table_name=table, schema_name=schema)


def ensure_assets(
    context: FileDataContext, specs: Iterable[AssetSpec]
) -> dict[str, BatchDefinition]:
    """The whole-asset batch definition of each asset, adding or fixing what the YAML lacks."""
    datasource = _datasource(context)
    batch_definitions: dict[str, BatchDefinition] = {}
    for spec in specs:
        asset = (
            datasource.get_asset(spec.name) if spec.name in datasource.get_asset_names() else None
        )
        if asset is not None and not _matches(asset, spec):
            log.info("asset %s changed in code: updating %s", spec.name, context.root_directory)
            datasource.delete_asset(spec.name)
            asset = None
        if asset is None:
            asset = _add_asset(datasource, spec)
        names = [bd.name for bd in asset.batch_definitions]
        batch_definitions[spec.name] = (
            asset.get_batch_definition(BATCH_DEFINITION)
            if BATCH_DEFINITION in names
            else asset.add_batch_definition_whole_table(BATCH_DEFINITION)
        )
    return batch_definitions


def ensure_spark_assets(
    context: FileDataContext, names: Iterable[str]
) -> dict[str, BatchDefinition]:
    """The Spark engine's datasource: a dataframe asset per suite (named after it), whose
    batch is the dataframe each run passes in (expectations/spark_source.py). Added when
    missing, so the committed YAML, which has them, is not rewritten."""
    try:
        datasource = context.data_sources.get(SPARK_DATASOURCE)
    except (KeyError, ValueError):
        log.info("adding the %s datasource to %s", SPARK_DATASOURCE, context.root_directory)
        # no spark_config: GX takes the process's session (moovitamix.spark); no persist: the
        # batches are read a few times at most, and the session outlives the validation
        datasource = context.data_sources.add_spark(SPARK_DATASOURCE, persist=False)
    batch_definitions: dict[str, BatchDefinition] = {}
    for name in names:
        asset = (
            datasource.get_asset(name)
            if name in datasource.get_asset_names()
            else datasource.add_dataframe_asset(name)
        )
        batch_definitions[name] = (
            asset.get_batch_definition(BATCH_DEFINITION)
            if BATCH_DEFINITION in [bd.name for bd in asset.batch_definitions]
            else asset.add_batch_definition_whole_dataframe(BATCH_DEFINITION)
        )
    return batch_definitions


def close_connections(context: FileDataContext) -> None:
    """Close the datasource's pooled connections now rather than when garbage collected."""
    try:
        datasource = context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError):
        return
    # GX keeps these private; closing what exists is all we want (never creating one).
    engine = getattr(datasource, "_execution_engine", None)
    if engine is not None:
        engine.close()
    pool = getattr(datasource, "_engine", None)
    if pool is not None:
        pool.dispose()
