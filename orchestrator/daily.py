"""The daily run (`make daily`, `bin/daily`): one run id, a summary at the end, a clear exit code.

It holds a lock (a second run exits at once), records itself and each step in the run ledger as
it goes, alerts on failure, and says in its first line which API and warehouse it uses.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import resource
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from moovitamix import exit_codes
from moovitamix.command import Commands
from moovitamix.errors import one_line
from moovitamix.logins import open_logins
from moovitamix.publication import Publication, discard
from moovitamix.roles import PUBLISHER
from moovitamix.run_ledger import RunLedger
from moovitamix.run_lock import RunLocked, run_lock
from moovitamix.settings import Settings
from moovitamix.simulator_process import SimulatorError, api_or_simulator
from moovitamix.spark import SparkUnavailable, check_spark_available, stop_spark_session
from moovitamix.step import RunContext, Step, StepFailed, StepReport
from moovitamix.warehouse import WarehouseUnreachable
from orchestrator.steps import (
    STEP_ROLES,
    Steps,
    closing_steps,
    pipeline_steps,
    while_the_simulator_starts,
)

__all__ = ["Step", "main", "run"]
log = logging.getLogger("orchestrator.daily")

# The embedded default: realistic data at a demo scale, so the first run is quick and its
# recommendations mean something. Override with MOOVITAMIX_SIMULATOR_ARGS.
DEMO_SIMULATOR_ARGS = (
    "--profile", "realistic", "--seed", "42", "--users", "5000", "--tracks", "2000",
)  # fmt: skip
MISSED_RUN_AFTER = timedelta(hours=26)  # daily cadence plus slack


@dataclass
class _Outcome:
    reports: list[tuple[str, float, StepReport]] = field(default_factory=list)  # passed steps
    failed_step: str | None = None
    error: str | None = None
    code: int = exit_codes.OK
    # the run process's peak RSS after each passed step, in MB: the step that raised it last
    # is where the run's peak was reached
    peaks: dict[str, float] = field(default_factory=dict)

    def peak_step(self) -> tuple[str, float] | None:
        """(the step during which the process reached its peak RSS, the peak in MB)."""
        if not self.peaks:
            return None
        top = max(self.peaks.values())
        return next((name, mb) for name, mb in self.peaks.items() if mb == top)


def peak_rss_mb() -> float:
    """The run process's peak resident set size so far (its high-water mark), in MB: the steps
    share the process, so the mark after a step is the highest it reached up to then."""
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kilobytes / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _check_previous_runs(ctx: RunContext, ledger: RunLedger) -> None:
    for killed in ledger.close_abandoned_runs():
        ctx.alert("warning", f"run {killed} ended without finishing (killed?); marked failed")
    last = ledger.last_success_at()
    if last and datetime.now(UTC) - last > MISSED_RUN_AFTER:
        last_success = last.isoformat(timespec="minutes")
        ctx.alert("warning", "no successful run in the last day", last_success=last_success)


def _as_step_role(ctx: RunContext, name: str) -> RunContext:
    """The context a step runs with: its warehouse URL is the step's own login (acting as its
    role), if it has one."""
    role = STEP_ROLES.get(name)
    return ctx if role is None else replace(ctx, warehouse=ctx.url_as(role))


def _run_steps(ctx: RunContext, ledger: RunLedger, steps: Steps) -> _Outcome:
    outcome = _Outcome()
    for index, (name, step) in enumerate(steps, start=1):
        log.info("[%d/%d] %s ...", index, len(steps), name)
        ledger.start_step(name)
        started = time.monotonic()
        try:
            report = step(_as_step_role(ctx, name))
        except Exception as exc:  # any failure is named, recorded and alerted (_failure)
            outcome.failed_step = name
            outcome.error, outcome.code = _failure(name, exc)
            if outcome.code != exit_codes.WAREHOUSE_UNREACHABLE:  # else the ledger is gone too
                ledger.finish_step(name, seconds=time.monotonic() - started, error=outcome.error)
            return outcome
        seconds = time.monotonic() - started
        outcome.peaks[name] = peak_rss_mb()
        ledger.finish_step(
            name,
            seconds=seconds,
            rows_in=report.rows_in,
            rows_out=report.rows_out,
            details=report.details | {"process_peak_rss_mb": outcome.peaks[name]},
        )
        outcome.reports.append((name, seconds, report))
        log.info("[%d/%d] %s done in %.1fs: %s", index, len(steps), name, seconds, report.summary)
        release_memory()
    return outcome


def release_memory() -> None:
    """Give back what a step freed before the next one starts: the steps share one process,
    and Arrow's pool (the ingestion's tables) and glibc's heap keep freed blocks for reuse, so
    the next step's peak would stand on the last one's.

    What outlives a full collection between steps is the run's long-lived state (the tools'
    modules, classes and caches: hundreds of thousands of objects): it is frozen, so the next
    collections (here, and the interpreter's own during a step) no longer walk it."""
    gc.collect()
    gc.freeze()
    if (arrow := sys.modules.get("pyarrow")) is not None:
        arrow.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        with suppress(OSError, AttributeError):  # not glibc (musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _failure(name: str, exc: Exception) -> tuple[str, int]:
    """A failed step's one line and exit code. Anything but StepFailed and an unreachable
    warehouse is a bug or an unexpected failure: logged with its traceback, still named."""
    if isinstance(exc, StepFailed):
        return str(exc), exc.code
    if isinstance(exc, WarehouseUnreachable):
        return str(exc), exit_codes.WAREHOUSE_UNREACHABLE
    log.error("step %s crashed", name, exc_info=exc)
    return f"{type(exc).__name__}: {one_line(exc)}", exit_codes.STEP_FAILED


def run(
    settings: Settings,
    run_id: str,
    steps: Steps | None = None,
    closing: Steps | None = None,
) -> int:
    """Run `steps` in order, then the `closing` steps even after a failure. Both default to the
    whole pipeline, which writes, audits, then publishes (the run has a `Publication`); tests
    pass their own steps, which then work on the live tables."""
    started = time.monotonic()
    publication = Publication(run_id) if steps is None else None
    meanwhile = None
    if steps is None:
        steps, closing = pipeline_steps(), closing_steps()
        meanwhile = while_the_simulator_starts
    with ExitStack() as stack:
        try:
            ctx = _start(stack, settings, run_id, publication, meanwhile)
        except StepFailed as exc:
            print(exc, file=sys.stderr, flush=True)
            return exc.code
        outcome = _run_recorded(ctx, steps, closing or ())
    _summary(run_id, outcome, time.monotonic() - started, len(ctx.alerts), engine_line(settings))
    return outcome.code


def _start(
    stack: ExitStack,
    settings: Settings,
    run_id: str,
    publication: Publication | None,
    meanwhile: Callable[[], object] | None = None,
) -> RunContext:
    """Before the first step: the Spark engine checked, the run lock taken, the API (the
    simulator when none is set; `meanwhile` runs while it starts) and the warehouse opened,
    all held by `stack`. StepFailed carries the one line and exit code of a run that did not
    start."""
    if settings.engine == "spark":
        try:
            check_spark_available()
        except SparkUnavailable as exc:
            raise StepFailed(f"not started: {exc}") from None
    try:
        stale = stack.enter_context(run_lock(settings.data_dir / "daily.lock", run_id))
    except RunLocked as exc:
        raise StepFailed(f"not started: {exc}", exit_codes.ALREADY_RUNNING) from None
    if stale:
        log.warning(
            "took over the lock of run %s (pid %s), which died without releasing it",
            stale.get("run_id"),
            stale.get("pid"),
        )
    extra = os.environ.get("MOOVITAMIX_SIMULATOR_ARGS")
    args = shlex.split(extra) if extra else DEMO_SIMULATOR_ARGS
    try:
        api_url, sim_log = stack.enter_context(
            api_or_simulator(settings, run_id, args, meanwhile=meanwhile)
        )
    except SimulatorError as exc:
        line = f"FAILED step 'simulator': {exc}"
        raise StepFailed(line, exit_codes.SOURCE_UNREACHABLE) from None
    simulated = sim_log is not None
    source = f"the built-in simulator at {api_url}" if simulated else f"the API at {api_url}"
    print(
        f"MooVitamix daily run {run_id}: using {source}"
        + (" (MOOVITAMIX_API_URL is unset)" if simulated else "")
        + f"; engine {engine_line(settings)}",
        flush=True,
    )
    if settings.engine == "spark":
        stack.callback(stop_spark_session)
    try:
        logins = open_logins(settings)
    except WarehouseUnreachable as exc:
        line = f"FAILED step 'warehouse': {exc}"
        raise StepFailed(line, exit_codes.WAREHOUSE_UNREACHABLE) from None
    # the run's own bookkeeping (ledger, discarding what failed) is the publisher login's
    warehouse = logins.url(PUBLISHER)
    return RunContext(
        settings, run_id, warehouse, api_url, simulated, publication=publication, logins=logins
    )


def _run_recorded(ctx: RunContext, steps: Steps, closing: Steps) -> _Outcome:
    """The steps, recorded in the run ledger: a failure discards what the run staged; the
    closing steps run once the run is recorded as finished; a failed run is alerted."""
    ledger = RunLedger(ctx.warehouse, ctx.run_id)
    ledger.ensure_tables()
    _check_previous_runs(ctx, ledger)
    ledger.start_run(source=ctx.api_url, warehouse=ctx.warehouse.masked)
    outcome = _run_steps(ctx, ledger, steps)
    if outcome.failed_step and outcome.code != exit_codes.WAREHOUSE_UNREACHABLE:
        _discard(ctx)
    if outcome.code != exit_codes.WAREHOUSE_UNREACHABLE:
        ledger.finish_run(failed_step=outcome.failed_step, error=outcome.error)
        after = _run_steps(ctx, ledger, closing)
        outcome.reports += after.reports
        outcome.peaks |= after.peaks
        if after.failed_step and not outcome.failed_step:
            # the summary lists every step
            outcome = replace(after, reports=outcome.reports, peaks=outcome.peaks)
            ledger.finish_run(failed_step=outcome.failed_step, error=outcome.error)
    if outcome.failed_step:
        title = f"daily run failed in step {outcome.failed_step}"
        ctx.alert("error", title, outcome.failed_step, error=outcome.error)
    return outcome


def _discard(ctx: RunContext) -> None:
    """A failed run publishes nothing: drop what it staged; readers keep yesterday's state."""
    if ctx.publication is None:
        return
    try:
        discard(ctx.warehouse, ctx.publication)
    except Exception as exc:  # best effort (the warehouse may be gone): the next run re-stages
        log.warning("could not drop this run's staged tables: %s", one_line(exc))
    log.warning("nothing published: the marts and recommendations of the last good run stay")


def engine_line(settings: Settings) -> str:
    """'postgres', or 'spark (master local[*], lake file:///...)': where the data plane runs."""
    spark = f"spark (master {settings.spark_master}, lake {settings.lake})"
    return spark if settings.engine == "spark" else settings.engine


def _summary(run_id: str, outcome: _Outcome, seconds: float, alerts: int, engine: str) -> None:
    status = f"FAILED in step '{outcome.failed_step}'" if outcome.failed_step else "OK"
    lines = ["", f"Run {run_id}: {status} after {seconds:.1f}s ({alerts} alert(s))"]
    lines += [f"  engine     {engine}"] + [
        f"  {name:<10} {secs:7.1f}s  {report.summary}" for name, secs, report in outcome.reports
    ]
    if (peak := outcome.peak_step()) is not None:
        lines.append(f"  memory     peak RSS {peak[1]:,.0f} MB (reached in {peak[0]})")
    if outcome.failed_step:
        lines.append(f"  {outcome.failed_step:<10} failed: {outcome.error}")
        if "publish" not in (name for name, _, _ in outcome.reports):  # else a closing step
            lines.append("  nothing published: readers keep the last good run's marts and lists")
    labels = {"data_docs": "data docs", "path": "health report"}
    where = {
        labels[key]: report.details[key]
        for _, _, report in outcome.reports
        for key in labels
        if report.details.get(key)
    }
    where |= {"dbt docs": "`make docs`", "run ledger": "monitoring.pipeline_runs"}
    lines.append("  see: " + "; ".join(f"{label}: {value}" for label, value in where.items()))
    print("\n".join(lines), file=sys.stderr if outcome.failed_step else sys.stdout, flush=True)


def main(argv: list[str] | None = None) -> int:
    commands = Commands("python -m orchestrator", __doc__)
    commands.add(None, lambda cmd: run(cmd.settings, cmd.run_id), run_log=True)
    return commands.main(argv)
