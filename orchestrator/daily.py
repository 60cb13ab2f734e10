"""The daily run (`make daily`, `bin/daily`): one run id, a summary at the end, a clear exit code.

It holds a lock (a second run exits at once), records itself and each step in the run ledger as
it goes, alerts on failure, and says in its first line which API and warehouse it uses. The
steps run in order; one may start during an earlier step's build (orchestrator/steps.py,
`EarlyStart`).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import resource
import shlex
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from moovitamix import exit_codes
from moovitamix.build_progress import BuildProgress
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
    EarlyStart,
    Steps,
    closing_steps,
    early_starts,
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
# What a dbt build adds to the run process's memory while it runs, estimated from the bench at
# a million users (bench/bench_daily.py): training beside the build peaked 120-310 MB above
# its peak after it, where the build had been let go. And the ledger's key of a step's rise.
BUILD_MEMORY_MB = 400.0
RISE = "rss_rise_mb"


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


def rss_mb() -> float:
    """The run process's resident set size now, in MB (0 where /proc is not there)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return round(pages * os.sysconf("SC_PAGESIZE") / 2**20, 1)


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


class _EarlyRun:
    """A step run in a thread of its own, started during an earlier step (`EarlyStart`) once
    the models it reads are built; the run's loop collects it when it reaches the step."""

    def __init__(
        self,
        name: str,
        order: int,
        label: str,
        step: Step,
        ctx: RunContext,
        ledger: RunLedger,
        when: EarlyStart,
    ) -> None:
        self.name, self.order, self.label, self.step = name, order, label, step
        self.stop = threading.Event()
        self.ctx, self.ledger, self.when = replace(ctx, stop=self.stop), ledger, when
        self.progress = BuildProgress()
        self.rss_at_start = 0.0
        self.started: float | None = None  # monotonic; None: it did not start (yet)
        self.seconds = 0.0
        self.report: StepReport | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=f"step-{name}", daemon=True)

    def begin(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        if not self.progress.wait_for(self.when.models):
            return  # the build ended without them: the step runs in its turn, or not at all
        log.info(
            "%s %s ... (during %s: %s are built)",
            self.label, self.name, self.when.during, ", ".join(self.when.models),
        )  # fmt: skip
        self.ledger.start_step(self.name, self.order)
        self.rss_at_start = rss_mb()
        self.started = time.monotonic()
        try:
            report = self.step(self.ctx)
            # the summary's seconds of overlapping steps add up to more than the run's
            self.report = replace(report, summary=f"{report.summary} (beside {self.when.during})")
        except Exception as exc:  # reported where the run's loop collects the step
            self.error = exc
        self.seconds = time.monotonic() - self.started

    def join(self, stop: bool = False) -> None:
        """Wait for the step (a build that ended without its models never starts it); `stop`:
        the run failed, the step stops at its next safe point (RunContext.stop)."""
        self.progress.end()
        if stop:
            self.stop.set()
        if self._thread.is_alive():
            log.info(
                "waiting for %s, started during %s, to %s",
                self.name, self.when.during, "stop" if stop else "finish",
            )  # fmt: skip
        self._thread.join()


def _run_steps(
    ctx: RunContext,
    ledger: RunLedger,
    steps: Steps,
    first: int = 1,
    early: Mapping[str, EarlyStart] | None = None,
) -> _Outcome:
    """Run `steps` in order (their ledger places from `first`); a step of `early` starts in a
    thread of its own during the step it names, once that step's build has what it reads."""
    outcome = _Outcome()
    places = {name: place for place, (name, _) in enumerate(steps, start=first)}
    total = first + len(steps) - 1
    runs: dict[str, _EarlyRun] = {}
    collected: set[str] = set()  # early steps already ended and recorded
    try:
        for name, step in steps:
            place = places[name]
            # an early step ends before the step that waits for it, and in its own turn
            for run in [r for r in runs.values() if name in (r.name, r.when.ends_before)]:
                del runs[run.name]
                run.join()
                if run.started is not None:
                    collected.add(run.name)
                    if not _collect(outcome, ledger, run):
                        return outcome
            if name in collected:
                continue
            for later, when in (early or {}).items():
                if when.during == name and later in places and _fits_beside(ctx, ledger, later):
                    runs[later] = _EarlyRun(
                        later, places[later], f"[{places[later]}/{total}]", dict(steps)[later],
                        _as_step_role(ctx, later), ledger, when,
                    )  # fmt: skip
                    ctx.build_progress = runs[later].progress
                    runs[later].begin()
            log.info("[%d/%d] %s ...", place, total, name)
            ledger.start_step(name, place)
            rss_before, started = rss_mb(), time.monotonic()
            try:
                report = step(_as_step_role(ctx, name))
            except Exception as exc:  # any failure is named, recorded and alerted (_failure)
                _failed(outcome, ledger, name, exc, time.monotonic() - started)
                return outcome
            finally:
                ctx.build_progress = None
            seconds = time.monotonic() - started
            rise = _rise(rss_before) if name in (early or {}) else None
            _passed(outcome, ledger, name, seconds, report, f"[{place}/{total}]", rise)
            # a step running beside the next ones keeps what it holds: nothing to freeze
            release_memory(freeze=not any(run.started is not None for run in runs.values()))
    finally:
        for run in runs.values():  # the run failed before reaching them: they stop first
            run.join(stop=True)
            if run.started is not None:
                _collect(outcome, ledger, run, first_failure=False)
    return outcome


def _rise(rss_at_start: float) -> float:
    """How far a step took the process's memory above where it was when it started (MB)."""
    return round(max(0.0, peak_rss_mb() - rss_at_start), 1)


def _fits_beside(ctx: RunContext, ledger: RunLedger, name: str) -> bool:
    """Whether step `name` may start beside the build: its rise in its latest run (the ledger's
    `rss_rise_mb`), over the process's memory now and what the build itself takes
    (BUILD_MEMORY_MB), fits the run's memory budget. Not before a run has measured it."""
    budget = ctx.settings.memory_budget_mb
    rise = ledger.last_detail(name, RISE)
    if rise is None or budget <= 0:
        return False
    expected = rss_mb() + BUILD_MEMORY_MB + rise
    if expected > budget:
        log.info(
            "%s starts after the build: beside it the run would reach ~%.0f MB (now %.0f MB, "
            "the build ~%.0f MB, %s's last rise %.0f MB), above MOOVITAMIX_MEMORY_BUDGET_MB=%.0f",
            name, expected, rss_mb(), BUILD_MEMORY_MB, name, rise, budget,
        )  # fmt: skip
        return False
    return True


def _collect(
    outcome: _Outcome, ledger: RunLedger, run: _EarlyRun, first_failure: bool = True
) -> bool:
    """Record an early step that ended; True if it passed."""
    if run.report is not None:
        rise = _rise(run.rss_at_start)
        _passed(outcome, ledger, run.name, run.seconds, run.report, run.label, rise)
        return True
    error = run.error or RuntimeError("the step returned no report")
    _failed(outcome, ledger, run.name, error, run.seconds, first_failure=first_failure)
    return False


def _passed(
    outcome: _Outcome,
    ledger: RunLedger,
    name: str,
    seconds: float,
    report: StepReport,
    place: str,
    rise: float | None = None,
) -> None:
    outcome.peaks[name] = peak_rss_mb()
    memory: dict[str, object] = {"process_peak_rss_mb": outcome.peaks[name]}
    if rise is not None:
        memory[RISE] = rise
    ledger.finish_step(
        name,
        seconds=seconds,
        rows_in=report.rows_in,
        rows_out=report.rows_out,
        details=report.details | memory,
    )
    outcome.reports.append((name, seconds, report))
    log.info("%s %s done in %.1fs: %s", place, name, seconds, report.summary)


def _failed(
    outcome: _Outcome,
    ledger: RunLedger,
    name: str,
    exc: Exception,
    seconds: float,
    first_failure: bool = True,
) -> None:
    """Record a failed step; the run's failure is its first failed step (a step that started
    early and failed after the run had already failed is recorded, not the run's failure)."""
    error, code = _failure(name, exc)
    if first_failure or outcome.failed_step is None:
        outcome.failed_step, outcome.error, outcome.code = name, error, code
    if code != exit_codes.WAREHOUSE_UNREACHABLE:  # else the ledger is gone too
        ledger.finish_step(name, seconds=seconds, error=error)


def release_memory(freeze: bool = True) -> None:
    """Give back what a step freed before the next one starts: the steps share one process,
    and Arrow's pool (the ingestion's tables) and glibc's heap keep freed blocks for reuse, so
    the next step's peak would stand on the last one's.

    What outlives a full collection between steps is the run's long-lived state (the tools'
    modules, classes and caches: hundreds of thousands of objects): it is frozen, so the next
    collections (here, and the interpreter's own during a step) no longer walk it. Not while
    a step runs beside the next ones (`freeze=False`): what it holds is not long-lived."""
    gc.collect()
    if freeze:
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
    early: Mapping[str, EarlyStart] | None = None,
) -> int:
    """Run `steps` in order, then the `closing` steps even after a failure. Both default to the
    whole pipeline, which writes, audits, then publishes (the run has a `Publication`), and
    trains beside the end of its build (`early_starts`); tests pass their own steps, which then
    work on the live tables, and the steps they start `early`."""
    started = time.monotonic()
    publication = Publication(run_id) if steps is None else None
    meanwhile = None
    if steps is None:
        steps, closing = pipeline_steps(), closing_steps()
        early = early_starts(settings.engine)
        meanwhile = while_the_simulator_starts
    with ExitStack() as stack:
        try:
            ctx = _start(stack, settings, run_id, publication, meanwhile)
        except StepFailed as exc:
            print(exc, file=sys.stderr, flush=True)
            return exc.code
        outcome = _run_recorded(ctx, steps, closing or (), early or {})
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


def _run_recorded(
    ctx: RunContext, steps: Steps, closing: Steps, early: Mapping[str, EarlyStart]
) -> _Outcome:
    """The steps, recorded in the run ledger: a failure discards what the run staged (once
    every step it started ended); the closing steps run once the run is recorded as finished;
    a failed run is alerted."""
    ledger = RunLedger(ctx.warehouse, ctx.run_id)
    ledger.ensure_tables()
    _check_previous_runs(ctx, ledger)
    ledger.start_run(source=ctx.api_url, warehouse=ctx.warehouse.masked)
    outcome = _run_steps(ctx, ledger, steps, early=early)
    if outcome.failed_step and outcome.code != exit_codes.WAREHOUSE_UNREACHABLE:
        _discard(ctx)
    if outcome.code != exit_codes.WAREHOUSE_UNREACHABLE:
        ledger.finish_run(failed_step=outcome.failed_step, error=outcome.error)
        after = _run_steps(ctx, ledger, closing, first=len(steps) + 1)
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
