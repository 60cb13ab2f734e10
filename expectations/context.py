"""The GX file context of expectations/gx/ (its committed YAML reads one table,
monitoring.check_metrics, through `${MVX_GX_CONNECTION_STRING}`, set only while a run validates)
and one validation run in it; everything GX generates goes to gx/uncommitted/."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expectations.report.data_docs import make_site_offline
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import apply_offline_defaults, temporary_env

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import FileDataContext
    from great_expectations.expectations import Expectation

GX_DIR = Path(__file__).resolve().parent / "gx"
CONNECTION_VARIABLE = "MVX_GX_CONNECTION_STRING"
DATASOURCE, ASSET, BATCH_DEFINITION = "warehouse", "check_metrics", "whole"


def data_docs_index(gx_dir: Path = GX_DIR) -> Path:
    return gx_dir / "uncommitted" / "data_docs" / "local_site" / "index.html"


def open_context(gx_dir: Path = GX_DIR) -> FileDataContext:
    import great_expectations as gx

    apply_offline_defaults()  # GX_ANALYTICS_ENABLED=false, whoever the caller is
    return gx.get_context(mode="file", context_root_dir=str(gx_dir))  # type: ignore[return-value]


def metrics_batch(context: FileDataContext) -> BatchDefinition:
    """The whole of monitoring.check_metrics, as the committed YAML declares it."""
    asset = context.data_sources.get(DATASOURCE).get_asset(ASSET)
    return asset.get_batch_definition(BATCH_DEFINITION)


def run_identifier(run_id: str) -> Any:
    """GX's id of this run's validations, with the run's time given: without one GX parses the
    run name as a date, and a run id whose suffix starts with a number of hours of 24 or more
    (`...Z-25ad1a`) reads as an impossible UTC offset that fails the validation's store."""
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name=run_id, run_time=datetime.now(UTC))


def run_suites(
    gx_dir: Path,
    url: ConnectionURL,
    run_id: str,
    checkpoint: str,
    suites: Mapping[str, Sequence[Expectation]],
    build_docs: bool,
) -> tuple[dict[str, list[Any]], Path | None]:
    """Run the suites in one checkpoint over check_metrics: each suite's expectation results,
    and the data docs index when built (then made readable offline)."""
    import great_expectations as gx
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    context = open_context(gx_dir)
    with temporary_env(CONNECTION_VARIABLE, url.sqlalchemy_url()):
        batch = metrics_batch(context)
        definitions = [
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(
                    name=name,
                    data=batch,
                    suite=context.suites.add_or_update(
                        gx.ExpectationSuite(name=name, expectations=list(expectations))
                    ),
                )
            )
            for name, expectations in suites.items()
        ]
        result = context.checkpoints.add_or_update(
            gx.Checkpoint(name=checkpoint, validation_definitions=definitions)
        ).run(run_id=run_identifier(run_id))
    by_suite = {r.suite_name: list(r.results) for r in result.run_results.values()}
    if not build_docs:
        return by_suite, None
    # one build for the whole run (an UpdateDataDocsAction would rebuild it per suite)
    suite_ids = [ExpectationSuiteIdentifier(name=name) for name in suites]
    context.build_data_docs(resource_identifiers=[*result.run_results, *suite_ids])
    make_site_offline(data_docs_index(gx_dir).parent)
    return by_suite, data_docs_index(gx_dir)
