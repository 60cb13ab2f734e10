"""`python -m dbt_project COMMAND`: build the marts, make and serve the docs, check freshness.

build      dbt build (seeds, models, data tests; unit tests unless --exclude-unit-tests)
docs       dbt docs generate; with --serve, `dbt docs serve` on 127.0.0.1:8080 until Ctrl-C
freshness  dbt source freshness on the raw tables
lint       sqlfluff lint of the models, tests and analyses (dbt templater)
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from dataclasses import replace

from dbt_project.results import BuildResult
from dbt_project.runner import (
    PROJECT_DIR,
    invoke,
    prepare_environment,
    run_build,
    run_dbt,
    target_dir,
)
from moovitamix import exit_codes
from moovitamix.run_context import current_run_id
from moovitamix.settings import PROJECT_ROOT, apply_offline_defaults, load_settings
from moovitamix.spark import stop_spark_session
from moovitamix.warehouse import WarehouseUnreachable

LINT_PATHS = ("models", "tests", "analyses")  # sqlfluff skips macro files


def _report(result: BuildResult, *, table: bool = True) -> int:
    if table and result.nodes:
        print(result.table(), flush=True)
    print(result.summary(), file=sys.stdout if result.success else sys.stderr, flush=True)
    return exit_codes.OK if result.success else exit_codes.STEP_FAILED


def _build(args: argparse.Namespace) -> int:
    result = run_build(
        load_settings(),
        current_run_id(),
        select=args.select,
        exclude_unit_tests=args.exclude_unit_tests,
        exclude=args.exclude,
        full_refresh=args.full_refresh,
    )
    return _report(result)


def _docs(args: argparse.Namespace) -> int:
    code = _report(run_dbt(load_settings(), "docs generate", current_run_id()), table=False)
    if code != exit_codes.OK:
        return code
    print(f"docs site: {target_dir() / 'index.html'}", flush=True)
    if not args.serve:
        return code
    stop_spark_session()  # the server reads only target/: the metastore is free for others
    print(f"serving the dbt docs at http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    serve = ["--host", args.host, "--port", str(args.port), "--no-browser"]
    result, outcome = invoke("docs serve", serve)
    if outcome is not None and isinstance(outcome.exception, KeyboardInterrupt):
        print("docs server stopped", flush=True)
        return exit_codes.OK
    return _report(result, table=False)


def _freshness(args: argparse.Namespace) -> int:
    result = run_dbt(load_settings(), "source freshness", current_run_id())
    if result.sources:
        print(result.freshness_table(), flush=True)
    return _report(result, table=False)


def lint_command(paths: list[str] | None = None, *, fix: bool = False) -> list[str]:
    targets = [str(PROJECT_DIR / p) for p in (paths or LINT_PATHS)]
    return [sys.executable, "-m", "sqlfluff", "fix" if fix else "lint", *targets]


def _lint(args: argparse.Namespace) -> int:
    """sqlfluff's dbt templater compiles the project: it needs a reachable Postgres warehouse
    (MVX_DBT_* if set, else the settings' one), not any data in it."""
    if not os.environ.get("MVX_DBT_HOST"):
        prepare_environment(replace(load_settings(), engine="postgres"))
    env = {**os.environ, "MOOVITAMIX_RUN_ID": os.environ.get("MOOVITAMIX_RUN_ID", "lint")}
    command = lint_command(args.paths, fix=args.fix)
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False).returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dbt_project",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser("build", help="dbt build: seeds, models and tests, in one process")
    build.add_argument("-s", "--select", nargs="+", help="dbt node selection")
    build.add_argument("--exclude", nargs="+", help="dbt nodes to leave out")
    build.add_argument(
        "--exclude-unit-tests", action="store_true", help="skip dbt unit tests (the daily run)"
    )
    build.add_argument(
        "--full-refresh", action="store_true", help="rebuild incremental models from scratch"
    )
    build.set_defaults(func=_build)

    docs = sub.add_parser("docs", help="dbt docs generate [and dbt docs serve]")
    docs.add_argument("--serve", action="store_true", help="serve the site until Ctrl-C")
    docs.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    docs.add_argument("--port", type=int, default=8080, help="port to serve on (8080)")
    docs.set_defaults(func=_docs)

    sub.add_parser("freshness", help="dbt source freshness of schema raw").set_defaults(
        func=_freshness
    )
    lint = sub.add_parser("lint", help="sqlfluff lint of the project's SQL")
    lint.add_argument("paths", nargs="*", help=f"under dbt_project/ (default: {LINT_PATHS})")
    lint.add_argument("--fix", action="store_true", help="sqlfluff fix instead of lint")
    lint.set_defaults(func=_lint)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(message)s",
    )
    apply_offline_defaults()
    try:
        return int(args.func(args))
    except WarehouseUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_codes.WAREHOUSE_UNREACHABLE
