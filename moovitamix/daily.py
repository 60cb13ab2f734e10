"""`make daily`: the whole daily run, one run id, a summary at the end, a clear exit code.

Steps run in order; each is timed and reported. The first line says what the run uses (API and
warehouse), the last lines summarise it. Steps that later issues add (transform, validate,
train, report) plug into `STEPS`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.run_context import current_run_id, setup_logging
from moovitamix.settings import Settings, apply_offline_defaults, load_settings
from moovitamix.simulator_process import SimulatorError, running_simulator
from moovitamix.warehouse import WarehouseUnreachable, open_warehouse

log = logging.getLogger("moovitamix.daily")

# The embedded default: realistic data at a demo scale, so the first run is quick and its
# recommendations mean something. Override with MOOVITAMIX_SIMULATOR_ARGS.
DEMO_SIMULATOR_ARGS = (
    "--profile",
    "realistic",
    "--seed",
    "42",
    "--users",
    "5000",
    "--tracks",
    "2000",
)
ENDPOINTS = ("tracks", "users", "listen_history")


class StepFailed(RuntimeError):
    def __init__(self, step: str, reason: str, code: int = exit_codes.STEP_FAILED) -> None:
        super().__init__(f"step '{step}' failed: {reason}")
        self.step = step
        self.code = code


@dataclass
class RunContext:
    settings: Settings
    run_id: str
    warehouse: ConnectionURL
    api_url: str
    api_is_simulator: bool


@dataclass
class StepReport:
    name: str
    seconds: float
    summary: str
    rows: dict[str, int] = field(default_factory=dict)


Step = Callable[[RunContext], StepReport]


def check_source(ctx: RunContext) -> StepReport:
    """Ask each endpoint for its first page: reachable, and how many records it will serve."""
    started = time.monotonic()
    totals: dict[str, int] = {}
    with httpx.Client(base_url=ctx.api_url, timeout=httpx.Timeout(30, connect=5)) as client:
        for endpoint in ENDPOINTS:
            try:
                response = client.get(f"/{endpoint}", params={"page": 1, "size": 1})
                response.raise_for_status()
                totals[endpoint] = int(response.json().get("total") or 0)
            except (httpx.HTTPError, ValueError) as exc:
                raise StepFailed(
                    "source",
                    f"GET /{endpoint} at {ctx.api_url}: {exc}",
                    exit_codes.SOURCE_UNREACHABLE,
                ) from None
    summary = ", ".join(f"{name} {count:,}" for name, count in totals.items())
    return StepReport("source", time.monotonic() - started, f"API totals: {summary}", totals)


STEPS: tuple[tuple[str, Step], ...] = (("source", check_source),)


@contextmanager
def _api(settings: Settings, run_id: str) -> Iterator[tuple[str, bool]]:
    if settings.api_url:
        yield settings.api_url, False
        return
    extra = os.environ.get("MOOVITAMIX_SIMULATOR_ARGS")
    args = shlex.split(extra) if extra else list(DEMO_SIMULATOR_ARGS)
    log_path = settings.logs_dir / f"{run_id}.simulator.log"
    with running_simulator(args, log_path=log_path) as url:
        yield url, True


def run(settings: Settings, run_id: str) -> int:
    started = time.monotonic()
    reports: list[StepReport] = []
    with ExitStack() as stack:
        try:
            api_url, simulated = stack.enter_context(_api(settings, run_id))
        except SimulatorError as exc:
            print(f"FAILED step 'simulator': {exc}", file=sys.stderr)
            return exit_codes.SOURCE_UNREACHABLE
        source = f"built-in simulator at {api_url}" if simulated else f"API {api_url}"
        print(
            f"MooVitamix daily run {run_id}: using the {source} "
            f"(MOOVITAMIX_API_URL {'unset' if simulated else 'set'})",
            flush=True,
        )
        try:
            warehouse = open_warehouse(settings)
        except WarehouseUnreachable as exc:
            print(f"FAILED step 'warehouse': {exc}", file=sys.stderr)
            return exit_codes.WAREHOUSE_UNREACHABLE
        kind = "embedded Postgres" if settings.uses_embedded_warehouse else "WAREHOUSE_URL"
        log.info("warehouse: %s (%s)", warehouse.masked, kind)
        ctx = RunContext(settings, run_id, warehouse, api_url, simulated)
        for name, step in STEPS:
            log.info("step %s: starting", name)
            try:
                report = step(ctx)
            except StepFailed as exc:
                _summary(run_id, reports, time.monotonic() - started, failed=str(exc))
                return exc.code
            reports.append(report)
            log.info("step %s: done in %.1fs: %s", name, report.seconds, report.summary)
    _summary(run_id, reports, time.monotonic() - started, failed=None)
    return exit_codes.OK


def _summary(run_id: str, reports: list[StepReport], seconds: float, failed: str | None) -> None:
    lines = ["", f"Run {run_id}: {'FAILED' if failed else 'OK'} in {seconds:.1f}s"]
    lines += [f"  {r.name:<12} {r.seconds:6.1f}s  {r.summary}" for r in reports]
    if failed:
        lines.append(f"  {failed}")
    print("\n".join(lines), file=sys.stderr if failed else sys.stdout, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moovitamix.daily", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output on console")
    args = parser.parse_args(argv)
    apply_offline_defaults()
    settings = load_settings()
    run_id = current_run_id()
    log_file = setup_logging(run_id, settings.logs_dir, verbose=args.verbose)
    log.info("run log: %s", log_file)
    return run(settings, run_id)


if __name__ == "__main__":
    raise SystemExit(main())
