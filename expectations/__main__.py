"""`python -m expectations validate|report|docs`: run the suites (`make validate`), write the
health report (`make report`), print the data docs' path (made readable offline). Exit codes:
0 ok, 1 an error expectation failed (warnings only alert), 2 bad arguments, 3 warehouse
unreachable."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from expectations.suites import Stage, UnknownSuite
from expectations.thresholds import ThresholdsError
from moovitamix import exit_codes
from moovitamix.run_context import current_run_id, setup_logging
from moovitamix.settings import Settings, apply_offline_defaults, load_settings
from moovitamix.warehouse import WarehouseUnreachable, open_warehouse

log = logging.getLogger("expectations")
GX_DIR_HELP = "the GX context (default expectations/gx)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m expectations",
        description="Great Expectations monitoring of the warehouse, and the health report.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug output on console")
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="run the suites (one checkpoint)")
    validate.add_argument("--run-id", help="default: MOOVITAMIX_RUN_ID, else a new one")
    validate.add_argument(
        "--stage",
        choices=[s.value for s in Stage],
        default="all",
        help="data: raw + marts suites; recommendations: after ML; all (default): both",
    )
    validate.add_argument(
        "--suite", action="append", default=[], help="e.g. raw.users (repeatable)"
    )
    validate.add_argument("--no-docs", action="store_true", help="do not build the data docs")
    validate.add_argument("--gx-dir", type=Path, help=GX_DIR_HELP)
    report = commands.add_parser("report", help="write the health report")
    report.add_argument("--output", type=Path, help="default: reports/health.html")
    report.add_argument("--max-runs", type=int, default=60, help="runs shown (default 60)")
    docs = commands.add_parser("docs", help="print the path of the data docs site")
    docs.add_argument("--gx-dir", type=Path, help=GX_DIR_HELP)
    return parser


def _validate(settings: Settings, args: argparse.Namespace) -> int:
    from expectations.validate import run_validation

    outcome = run_validation(
        settings,
        args.run_id,
        open_warehouse(settings),
        stage=Stage(args.stage),
        build_docs=not args.no_docs,
        suites=args.suite,
        gx_dir=args.gx_dir,
    )
    print(f"validation of run {args.run_id}: {outcome.summary()} ({outcome.seconds:.1f}s)")
    for r in outcome.failures:
        what = f"{r.suite}.{r.expectation}: {r.observed_value}"
        print(f"  {r.severity.upper():<7} {what} (threshold {r.threshold})")
    if outcome.data_docs:
        print(f"data docs: {outcome.data_docs}")
    return exit_codes.OK if outcome.ok else exit_codes.STEP_FAILED


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from expectations.report import default_report_path, write_health_report

    if args.max_runs < 1:
        print("--max-runs must be at least 1", file=sys.stderr)
        return exit_codes.USAGE
    output = args.output or default_report_path(settings)
    path = write_health_report(open_warehouse(settings), output, max_runs=args.max_runs)
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
    args.run_id = getattr(args, "run_id", None) or current_run_id()
    log_file = setup_logging(args.run_id, settings.logs_dir, verbose=args.verbose)
    try:
        return (_validate if args.command == "validate" else _report)(settings, args)
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
