"""One validation run: record the run's figures, measure every check where the data is, validate
the measurements with GX in one checkpoint, write the results, alert per failed expectation: a
failed `error` one makes the outcome not ok (the daily step fails), a `warning` only alerts."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from expectations.checks import Measured, expectations
from expectations.context import GX_DIR, run_suites
from expectations.engines import Engine, open_engine
from expectations.results import CheckResult, check_result, write_measured, write_results
from expectations.run_metrics import record_run_metrics
from expectations.suites import BuildContext, Stage, SuiteSpec, UnknownSuite, all_suites
from expectations.thresholds import SEVERITIES, Severity, Thresholds, load_thresholds
from moovitamix.alerts import Alert, send_alert
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.publication import LIVE, Relations
from moovitamix.settings import Settings
from moovitamix.warehouse import connect

if TYPE_CHECKING:
    from expectations.spark_engine import SparkEngine

log = logging.getLogger(__name__)

STEP = "validate"
AlertSink = Callable[[Alert], None]
Measurements = dict[str, Measured]  # by check name
MAX_REASON = 300


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

    def failed(self, severity: Severity) -> list[CheckResult]:
        return [r for r in self.failures if r.severity == severity]

    @property
    def validated_nothing(self) -> bool:
        """Every suite chosen was skipped (its tables missing): nothing was checked."""
        return not self.results and bool(self.skipped)

    @property
    def ok(self) -> bool:
        """No error expectation failed (warnings allowed), and something was validated: a
        warehouse without the tables (empty, or the wrong one) fails closed."""
        return not self.failed("error") and not self.validated_nothing

    @property
    def suites(self) -> list[str]:
        return sorted({r.suite for r in self.results})

    def counts(self) -> dict[str, dict[str, int]]:
        """{severity: {"passed": n, "failed": n}}."""
        tally = Counter((r.severity, r.success) for r in self.results)
        return {s: {"passed": tally[(s, True)], "failed": tally[(s, False)]} for s in SEVERITIES}

    def summary(self) -> str:
        n = Counter("passed" if r.success else r.severity for r in self.results)
        text = (
            f"{len(self.results)} expectation(s) in {len(self.suites)} suite(s): {n['passed']} "
            f"passed, {n['error']} error(s) and {n['warning']} warning(s) failed"
        )
        could_not_run = sum(1 for r in self.results if r.could_not_run)
        if could_not_run:
            text += f" ({could_not_run} could not run)"
        if self.skipped:
            text += f"; skipped {', '.join(name for name, _ in self.skipped)}"
        return text

    def failure_lines(self) -> list[str]:
        """'ERROR   raw.users.email_format: 0.50% (users) (threshold <= 0.00%)' per failure."""
        return [
            f"{r.severity.upper():<7} {r.suite}.{r.expectation}: {r.observed_value} "
            f"(threshold {r.threshold})"
            for r in self.failures
        ]

    def alerts(self) -> list[Alert]:
        """One per failed expectation (a warning whose check also failed as error is implied);
        a check that could not run says so and why, not what it would have checked."""
        failed_errors = {(r.suite, r.expectation) for r in self.failed("error")}
        alerts = []
        for r in self.failures:
            if r.severity == "warning" and (r.suite, r.expectation) in failed_errors:
                continue
            details = {"suite": r.suite, "expectation": r.expectation}
            details |= {"observed": r.observed_value, "threshold": r.threshold}
            title = f"{r.alert_title or r.description} [{r.suite}]"
            if r.could_not_run:
                title = f"check {r.expectation} could not run: {r.could_not_run} [{r.suite}]"
                details["could_not_run"] = r.could_not_run
            alerts.append(Alert(r.severity, title, self.run_id, STEP, details))  # type: ignore[arg-type]
        return alerts


def _choose(stage: Stage, names: Collection[str]) -> list[SuiteSpec]:
    suites = all_suites()
    unknown = set(names) - {s.name for s in suites}
    if unknown:
        raise UnknownSuite(f"no such suite: {', '.join(sorted(unknown))}")
    return [s for s in suites if s.in_stage(stage) and (not names or s.name in names)]


def _measure(engine: Engine | SparkEngine, spec: SuiteSpec, ctx: BuildContext) -> Measurements:
    """Each check's metric rows, or why its query raised (the server's message alone)."""
    measured: Measurements = {}
    for check in spec.build(ctx):
        try:
            rows = engine.rows(check.query.format(batch=spec.batch(ctx)))
            measured[check.name] = Measured(check, tuple(rows))
        except Exception as exc:  # a check whose query raises could not run; the others go on
            diag = getattr(getattr(exc, "diag", None), "message_primary", None)  # psycopg's
            reason = (diag or one_line(exc))[:MAX_REASON]  # Spark's goes on with the plan
            measured[check.name] = Measured(check, could_not_run=reason)
    return measured


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
    """Validate the tables `relations` names (the daily run's candidates, or the live ones) on
    the settings' engine for run `run_id`; write results, raise alerts (to `alert`, default
    moovitamix.alerts.send_alert). `stage` picks the suites, `suites` narrows them by name."""
    started = time.monotonic()
    chosen = _choose(stage, suites)
    thresholds = thresholds or load_thresholds()
    measured: dict[str, Measurements] = {}  # by suite
    skipped: list[tuple[str, str]] = []
    with open_engine(settings, url, relations) as engine:
        chosen = [spec for spec in chosen if spec.runs_on(engine.dialect)]
        if stage is not Stage.RECOMMENDATIONS:
            record_run_metrics(engine, run_id, thresholds)
        engine.load({table for spec in chosen for table in spec.requires})
        rel = engine.relations
        present = engine.existing(rel(table) for spec in chosen for table in spec.requires)
        ctx = BuildContext(run_id, thresholds, rel, engine.dialect)
        for spec in chosen:
            missing = ", ".join(rel(table) for table in spec.requires if rel(table) not in present)
            if missing:
                log.warning("suite %s skipped: %s missing", spec.name, missing)
                skipped.append((spec.name, f"{missing} missing"))
            else:
                measured[spec.name] = _measure(engine, spec, ctx)
    validated_at = datetime.now(UTC)
    with connect(url) as conn:
        write_measured(conn, run_id, measured)
    results: list[CheckResult] = []
    docs: Path | None = None
    if measured:
        built = {
            suite: [e for m in by.values() for e in expectations(m.check, suite, run_id, m)]
            for suite, by in measured.items()
        }
        gx_results, docs = run_suites(
            gx_dir or GX_DIR, url, run_id, f"moovitamix_{stage}", built, build_docs
        )
        results = [
            check_result(run_id, suite, r, measured[suite][r.expectation_config.meta["check"]])
            for suite, suite_results in gx_results.items()
            for r in suite_results
        ]
    with connect(url) as conn:
        write_results(conn, run_id, list(measured), results, validated_at)
    seconds = time.monotonic() - started
    outcome = ValidationOutcome(run_id, stage, tuple(results), tuple(skipped), seconds, docs)
    for line in outcome.failure_lines():
        log.info("%s", line)
    log.info("validation (%s) in %.1fs: %s", stage, seconds, outcome.summary())
    if docs:
        log.info("data docs: %s", docs)
    sink: AlertSink = alert or (lambda a: send_alert(a, settings.alert_webhook_url))
    for item in outcome.alerts():
        sink(item)
    return outcome
