"""`python -m expectations validate|report|docs`: run the suites (`make validate`; exit 1 when
an error expectation fails, warnings only alert), write the health report (`make report`), print
the data docs' path (made readable offline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from expectations.suites import Stage, UnknownSuite
from expectations.thresholds import ThresholdsError
from moovitamix import exit_codes
from moovitamix.command import Command, Commands, UsageError
from moovitamix.roles import ANALYST, ML, TRANSFORMER
from moovitamix.step import StepFailed

GX_DIR_HELP = "the GX context (default expectations/gx)"


def _validate(cmd: Command) -> int:
    from expectations.validate import run_validation

    args = cmd.args
    # each stage as its step's own login; both at once need the bootstrap user's reach
    role = {Stage.DATA: TRANSFORMER, Stage.RECOMMENDATIONS: ML}.get(Stage(args.stage))
    outcome = run_validation(
        cmd.settings,
        cmd.run_id,
        cmd.warehouse if role is None else cmd.login(role),
        stage=Stage(args.stage),
        build_docs=not args.no_docs,
        suites=args.suite,
        gx_dir=args.gx_dir,
    )
    print(f"validation of run {cmd.run_id}: {outcome.summary()} ({outcome.seconds:.1f}s)")
    for line in outcome.failure_lines():
        print(f"  {line}")
    if outcome.data_docs:
        print(f"data docs: {outcome.data_docs}")
    return exit_codes.OK if outcome.ok else exit_codes.STEP_FAILED


def _report(cmd: Command) -> None:
    from expectations.report import default_report_path, write_health_report

    if cmd.args.max_runs < 1:
        raise UsageError("--max-runs must be at least 1")
    output = cmd.args.output or default_report_path(cmd.settings)
    path = write_health_report(cmd.login(ANALYST), output, max_runs=cmd.args.max_runs)
    print(f"health report: {path}")


def _docs(cmd: Command) -> None:
    from expectations.context import GX_DIR, data_docs_index
    from expectations.report.data_docs import make_site_offline

    index = data_docs_index(cmd.args.gx_dir or GX_DIR)
    if not index.is_file():
        raise StepFailed(f"no data docs yet ({index}): run `make validate` first")
    make_site_offline(index.parent)  # a site built before the rewrite existed
    print(index)


def main(argv: Sequence[str] | None = None) -> int:
    commands = Commands(
        "python -m expectations",
        "Great Expectations monitoring of the warehouse, and the health report.",
        usage_errors=(UnknownSuite, ThresholdsError),
    )
    validate = commands.add("validate", _validate, "run the suites (one checkpoint)", run_log=True)
    validate.add_argument("--run-id", help="default: MOOVITAMIX_RUN_ID, else a new one")
    validate.add_argument(
        "--stage",
        choices=[s.value for s in Stage],
        default="all",
        help="data: raw + marts suites; recommendations: after ML; all (default): both",
    )
    validate.add_argument("--suite", action="append", default=[], help="e.g. raw.users; repeatable")
    validate.add_argument("--no-docs", action="store_true", help="do not build the data docs")
    validate.add_argument("--gx-dir", type=Path, help=GX_DIR_HELP)
    report = commands.add("report", _report, "write the health report", run_log=True)
    report.add_argument("--output", type=Path, help="default: reports/health.html")
    report.add_argument("--max-runs", type=int, default=60, help="runs shown (default 60)")
    docs = commands.add("docs", _docs, "print the path of the data docs site")
    docs.add_argument("--gx-dir", type=Path, help=GX_DIR_HELP)
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
