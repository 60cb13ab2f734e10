"""One validation run: record the run's figures (monitoring.run_metrics), build the suites from
code, run them in one GX checkpoint, build the data docs site, write
monitoring.validation_results and raise an alert per failed expectation.

An `error` expectation that fails makes the outcome not ok (the daily step fails on it); a
`warning` one only alerts. The result rows are written, and the alerts raised, either way.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import great_expectations as gx
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

from expectations import context as gx_context
from expectations.paths import GX_DIR, data_docs_index
from expectations.results import CheckResult, check_result, write_results
from expectations.run_metrics import record_run_metrics
from expectations.suites import BuildContext, Stage, SuiteSpec, UnknownSuite, all_suites
from expectations.tables import existing_tables
from expectations.thresholds import Thresholds, load_thresholds
from moovitamix.alerts import Alert, send_alert
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import LIVE, Relations
from moovitamix.settings import Settings
from moovitamix.warehouse import connect

if TYPE_CHECKING:
    from expectations.spark_source import SparkSource

log = logging.getLogger(__name__)

STEP = "validate"
AlertSink = Callable[[Alert], None]


@dataclass(frozen=True)
class ValidationOutcome:
    run_id: str
    stage: Stage
    results: tuple[CheckResult, ...]
    skipped: tuple[tuple[str, str], ...]  # (suite, why)
    seconds: float
    data_docs: Path | None

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success]

    @property
    def error_failures(self) -> list[CheckResult]:
        return [r for r in self.failures if r.severity == "error"]

    @property
    def warning_failures(self) -> list[CheckResult]:
        return [r for r in self.failures if r.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No error expectation failed (warnings allowed)."""
        return not self.error_failures

    def counts(self) -> dict[str, dict[str, int]]:
        """{severity: {"passed": n, "failed": n}}."""
        tally = Counter((r.severity, "passed" if r.success else "failed") for r in self.results)
        return {
            severity: {"passed": tally[(severity, "passed")], "failed": tally[(severity, "failed")]}
            for severity in ("error", "warning")
        }

    def summary(self) -> str:
        counts = self.counts()
        passed = sum(c["passed"] for c in counts.values())
        text = (
            f"{len(self.results)} expectation(s) in {len(self.suites)} suite(s): "
            f"{passed} passed, {counts['error']['failed']} error(s) and "
            f"{counts['warning']['failed']} warning(s) failed"
        )
        could_not_run = sum(1 for r in self.results if r.could_not_run)
        if could_not_run:
            text += f" ({could_not_run} could not run)"
        if self.skipped:
            text += f"; skipped {', '.join(name for name, _ in self.skipped)}"
        return text

    @property
    def suites(self) -> list[str]:
        return sorted({r.suite for r in self.results})


def _alerts(outcome: ValidationOutcome) -> list[Alert]:
    """One alert per failed expectation; a warning whose check also failed as error is implied.
    A check that could not run says so, not what it would have checked."""
    failed_errors = {(r.suite, r.expectation) for r in outcome.error_failures}
    alerts = []
    for r in outcome.failures:
        if r.severity == "warning" and (r.suite, r.expectation) in failed_errors:
            continue
        details = {
            "suite": r.suite,
            "expectation": r.expectation,
            "observed": r.observed_value,
            "threshold": r.threshold,
        }
        if r.could_not_run:
            title = f"check {r.expectation} could not run: {r.could_not_run} [{r.suite}]"
            details["could_not_run"] = r.could_not_run
        else:
            title = f"{r.alert_title or r.description} [{r.suite}]"
        alerts.append(Alert(r.severity, title, outcome.run_id, STEP, details))  # type: ignore[arg-type]
    return alerts


def _choose(stage: Stage, names: Collection[str]) -> list[SuiteSpec]:
    suites = all_suites()
    unknown = set(names) - {s.name for s in suites}
    if unknown:
        raise UnknownSuite(f"no such suite: {', '.join(sorted(unknown))}")
    return [s for s in suites if s.in_stage(stage) and (not names or s.name in names)]


def _log(outcome: ValidationOutcome) -> None:
    for r in outcome.failures:
        what = "" if r.could_not_run else "failed: "  # observed_value: "could not run: ..."
        log.info(
            "%s %s.%s %s%s (threshold %s)",
            r.severity.upper(), r.suite, r.expectation, what, r.observed_value, r.threshold,
        )  # fmt: skip
    log.info("validation (%s) in %.1fs: %s", outcome.stage, outcome.seconds, outcome.summary())
    if outcome.data_docs:
        log.info("data docs: %s", outcome.data_docs)


def _required(specs: Sequence[SuiteSpec]) -> Iterable[str]:
    return [table for s in specs for table in s.requires]


def _runnable(
    specs: Sequence[SuiteSpec], url: ConnectionURL, present: set[str] | None = None
) -> tuple[list[SuiteSpec], list[tuple[str, str]]]:
    """The suites whose tables exist (`present`, or else those of the warehouse at `url`)."""
    if present is None:
        with connect(url) as conn:
            present = existing_tables(conn, _required(specs))
    runnable, skipped = [], []
    for spec in specs:
        missing = [table for table in spec.requires if table not in present]
        if missing:
            skipped.append((spec.name, f"{', '.join(missing)} missing"))
        else:
            runnable.append(spec)
    return runnable, skipped


def _run_checkpoint(
    specs: Sequence[SuiteSpec],
    build: BuildContext,
    stage: Stage,
    gx_dir: Path,
    build_docs: bool,
    spark: SparkSource | None = None,
) -> tuple[list[CheckResult], Path | None]:
    context = gx_context.open_context(gx_dir)
    if spark is None:
        by_asset = gx_context.ensure_assets(context, [s.asset for s in specs])
        batch_definitions = {spec.name: by_asset[spec.asset.name] for spec in specs}
    else:  # a dataframe asset per suite, its batch passed in at run time
        batch_definitions = gx_context.ensure_spark_assets(context, [s.name for s in specs])
    definitions = []
    for spec in specs:
        suite = context.suites.add_or_update(
            gx.ExpectationSuite(name=spec.name, expectations=spec.build(build))
        )
        definitions.append(
            context.validation_definitions.add_or_update(
                gx.ValidationDefinition(
                    name=spec.name, data=batch_definitions[spec.name], suite=suite
                )
            )
        )
    # Postgres: one checkpoint over every suite. Spark: a checkpoint's batch parameters go to
    # each of its validations, so each suite runs in a checkpoint of its own with its dataframe.
    runs: list[tuple[str, list[gx.ValidationDefinition], dict[str, Any] | None]] = (
        [(f"moovitamix_{stage}", definitions, None)]
        if spark is None
        else [
            (f"moovitamix_{stage}__{spec.name}", [definition], {"dataframe": spark.dataframe(spec)})
            for spec, definition in zip(specs, definitions, strict=True)
        ]
    )
    run_id = RunIdentifier(run_name=build.run_id)
    run_results: dict[Any, Any] = {}
    try:
        for name, validations, batch_parameters in runs:
            checkpoint = context.checkpoints.add_or_update(
                gx.Checkpoint(
                    name=name,
                    validation_definitions=validations,
                    # counts and shares, but no sample of unexpected values: records (PII)
                    result_format={"result_format": "SUMMARY", "partial_unexpected_count": 0},
                )
            )
            result = checkpoint.run(batch_parameters=batch_parameters, run_id=run_id)
            run_results.update(result.run_results)
    finally:
        gx_context.close_connections(context)
    if build_docs:
        # One build for the whole run: the pages of this run's results and suites, and the
        # index. (UpdateDataDocsAction would rebuild the index once per suite, ~9x slower.)
        suites = [ExpectationSuiteIdentifier(name=spec.name) for spec in specs]
        gx_context.build_docs(context, [*run_results, *suites], gx_dir)
    results = [
        check_result(build.run_id, suite_result.suite_name, expectation_result)
        for suite_result in run_results.values()
        for expectation_result in suite_result.results
    ]
    return results, data_docs_index(gx_dir) if build_docs else None


def _record_run_metrics(
    settings: Settings,
    url: ConnectionURL,
    run_id: str,
    thresholds: Thresholds,
    relations: Relations,
) -> dict[str, float]:
    """This run's figures, measured where the marts are, stored in Postgres."""
    with connect(url) as conn:
        if settings.engine != "spark":
            return record_run_metrics(conn, run_id, thresholds, relations)
        from expectations.spark_run_metrics import record_spark_run_metrics
        from moovitamix.spark import spark_session

        spark = spark_session(settings)
        return record_spark_run_metrics(spark, conn, run_id, thresholds, relations)


def run_validation(
    settings: Settings,
    run_id: str,
    url: ConnectionURL,
    *,
    stage: Stage = Stage.ALL,
    gx_dir: Path | None = None,
    thresholds: Thresholds | None = None,
    alert: AlertSink | None = None,
    build_docs: bool = True,
    suites: Collection[str] = (),
    relations: Relations = LIVE,
) -> ValidationOutcome:
    """Validate the warehouse at `url` for run `run_id`; write results, raise alerts.

    `stage` picks the suites (see expectations.suites), `suites` narrows them down by name.
    Alerts go to `alert` (default: moovitamix.alerts.send_alert, with the settings' webhook).
    `relations` says where the tables are: the daily run validates its candidate marts and
    staged lists before publishing them (moovitamix/publication.py). On the Spark engine the
    suites read the Spark tables (expectations/spark_source.py); the results, run metrics and
    alerts are the same, in the same Postgres tables.
    """
    started = time.monotonic()
    chosen = _choose(stage, suites)
    thresholds = thresholds or load_thresholds()
    on_spark = settings.engine == "spark"
    if stage is not Stage.RECOMMENDATIONS:
        volumes = _record_run_metrics(settings, url, run_id, thresholds, relations)
        if volumes:
            log.info("run metrics: %s", ", ".join(f"{k} {v:,.0f}" for k, v in volumes.items()))
    results: list[CheckResult] = []
    docs: Path | None = None
    validated_at = datetime.now(UTC)
    with ExitStack() as stack:
        spark: SparkSource | None = None
        if on_spark:
            from expectations.spark_source import spark_source

            spark = stack.enter_context(spark_source(settings, url, relations, chosen))
            located = [spec.located(spark.relations) for spec in chosen]
            specs, skipped = _runnable(located, url, spark.existing(_required(located)))
            build = BuildContext(run_id, thresholds, spark.relations, spark.dialect)
        else:
            specs, skipped = _runnable([spec.located(relations) for spec in chosen], url)
            build = BuildContext(run_id, thresholds, relations)
        for name, why in skipped:
            log.warning("suite %s skipped: %s", name, why)
        if specs:
            with gx_context.connection_variable(url):
                results, docs = _run_checkpoint(
                    specs, build, stage, gx_dir or GX_DIR, build_docs, spark
                )
    with connect(url) as conn:
        write_results(conn, run_id, [s.name for s in specs], results, validated_at)
    outcome = ValidationOutcome(
        run_id, stage, tuple(results), tuple(skipped), time.monotonic() - started, docs
    )
    _log(outcome)
    sink: AlertSink = alert or (lambda a: send_alert(a, settings.alert_webhook_url))
    for item in _alerts(outcome):
        sink(item)
    return outcome
