"""`python -m expectations`: the monitoring layer's commands.

    validate   run the suites in one checkpoint (`make validate`); exit 1 if an error
               expectation failed, 0 if only warnings did
    report     write the health report, reports/health.html (`make report`)
    docs       print the path of the GX data docs site (built by `validate`), after making
               sure it reads offline

Exit codes: 0 ok, 1 an error expectation failed, 2 bad arguments, 3 warehouse unreachable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from expectations.suites import UnknownSuite
from expectations.thresholds import ThresholdsError
from moovitamix import exit_codes
from moovitamix.run_context import current_run_id, setup_logging
from moovitamix.settings import Settings, apply_offline_defaults, load_settings
from moovitamix.warehouse import WarehouseUnreachable, open_warehouse

log = logging.getLogger("expectations")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m expectations",
        description="Great Expectations monitoring of the warehouse, and the health report.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output on console")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="run the suites (one checkpoint)")
    validate.add_argument(
        "--run-id", help="the run to validate for (default: MOOVITAMIX_RUN_ID, else a new one)"
    )
    validate.add_argument(
        "--stage",
        choices=["data", "recommendations", "all"],
        default="all",
        help="data: raw + marts suites; recommendations: after ML; all (default): both",
    )
    validate.add_argument(
        "--suite", action="append", default=[], help="only this suite (repeatable), e.g. raw.users"
    )
    validate.add_argument("--no-docs", action="store_true", help="do not build the data docs")
    validate.add_argument("--gx-dir", type=Path, help="the GX context (default expectations/gx)")
    report = commands.add_parser("report", help="write the health report")
    report.add_argument("--output", type=Path, help="default: reports/health.html")
    report.add_argument("--max-runs", type=int, default=60, help="runs shown (default 60)")
    docs = commands.add_parser("docs", help="print the path of the data docs site")
    docs.add_argument("--gx-dir", type=Path, help="the GX context (default expectations/gx)")
    return parser


def _validate(settings: Settings, args: argparse.Namespace) -> int:
    from expectations.suites import Stage
    from expectations.validate import run_validation

    run_id = args.run_id or current_run_id()
    url = open_warehouse(settings)
    outcome = run_validation(
        settings,
        run_id,
        url,
        stage=Stage(args.stage),
        build_docs=not args.no_docs,
        suites=args.suite,
        gx_dir=args.gx_dir,
    )
    print(f"validation of run {run_id}: {outcome.summary()} ({outcome.seconds:.1f}s)")
    for r in outcome.failures:
        print(
            f"  {r.severity.upper():<7} {r.suite}.{r.expectation}: {r.observed_value} "
            f"(threshold {r.threshold})"
        )
    if outcome.data_docs:
        print(f"data docs: {outcome.data_docs}")
    return exit_codes.OK if outcome.ok else exit_codes.STEP_FAILED


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from expectations.report import default_report_path, write_health_report

    if args.max_runs < 1:
        print("--max-runs must be at least 1", file=sys.stderr)
        return exit_codes.USAGE
    path = write_health_report(
        open_warehouse(settings),
        args.output or default_report_path(settings),
        max_runs=args.max_runs,
    )
    print(f"health report: {path}")
    return exit_codes.OK


def _docs(gx_dir: Path | None) -> int:
    from expectations.context import GX_DIR, data_docs_index
    from expectations.report.data_docs import make_site_offline

    index = data_docs_index(gx_dir or GX_DIR)
    if not index.is_file():
        print(f"no data docs yet ({index}): run `make validate` first", file=sys.stderr)
        return exit_codes.STEP_FAILED
    make_site_offline(index.parent)  # a site built before the rewrite existed
    print(index)
    return exit_codes.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "docs":
        return _docs(args.gx_dir)
    apply_offline_defaults()
    settings = load_settings()
    run_id = getattr(args, "run_id", None) or current_run_id()
    log_file = setup_logging(run_id, settings.logs_dir, verbose=args.verbose)
    try:
        if args.command == "validate":
            args.run_id = run_id
            return _validate(settings, args)
        return _report(settings, args)
    except (UnknownSuite, ThresholdsError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    except WarehouseUnreachable as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return exit_codes.WAREHOUSE_UNREACHABLE
    finally:
        log.debug("run log: %s", log_file)


if __name__ == "__main__":
    sys.exit(main())
