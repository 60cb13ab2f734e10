"""`python -m dbt_project build|docs|freshness|lint`: dbt's own commands on the engine's target,
with the project's paths and the opened warehouse; sqlfluff on the project's SQL."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

from dbt_project import runner
from dbt_project.results import BuildResult
from moovitamix import exit_codes
from moovitamix.command import Command, Commands
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import TRANSFORMER
from moovitamix.settings import PROJECT_ROOT
from moovitamix.spark import stop_spark_session

LINT_PATHS = ("models", "tests", "analyses")  # sqlfluff skips macro files


def _warehouse(cmd: Command) -> ConnectionURL | None:
    """The Postgres warehouse dbt builds in, as the transformer's own login; none for
    dbt-spark."""
    return None if cmd.settings.engine == "spark" else cmd.login(TRANSFORMER)


def _report(result: BuildResult, *, table: bool = True) -> int:
    if table and result.nodes:
        print(result.table(), flush=True)
    print(result.summary(), file=sys.stdout if result.success else sys.stderr, flush=True)
    return exit_codes.OK if result.success else exit_codes.STEP_FAILED


def _build(cmd: Command) -> int:
    args = cmd.args
    result = runner.run_build(
        cmd.settings,
        cmd.run_id,
        _warehouse(cmd),
        select=args.select,
        exclude_unit_tests=args.exclude_unit_tests,
        exclude=args.exclude,
        full_refresh=args.full_refresh,
    )
    return _report(result)


def _docs(cmd: Command) -> int:
    generated = runner.run_dbt(cmd.settings, _warehouse(cmd), "docs generate", cmd.run_id)
    code = _report(generated, table=False)
    if code != exit_codes.OK:
        return code
    print(f"docs site: {runner.target_dir() / 'index.html'}", flush=True)
    if not cmd.args.serve:
        return code
    stop_spark_session()  # the server reads only target/: the metastore is free for others
    host, port = cmd.args.host, cmd.args.port
    print(f"serving the dbt docs at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    serve = ["--host", host, "--port", str(port), "--no-browser"]
    result, outcome = runner.invoke("docs serve", serve)
    if outcome is not None and isinstance(outcome.exception, KeyboardInterrupt):
        print("docs server stopped", flush=True)
        return exit_codes.OK
    return _report(result, table=False)


def _freshness(cmd: Command) -> int:
    result = runner.run_dbt(cmd.settings, _warehouse(cmd), "source freshness", cmd.run_id)
    if result.sources:
        print(result.freshness_table(), flush=True)
    return _report(result, table=False)


def lint_command(paths: list[str] | None = None, *, fix: bool = False) -> list[str]:
    targets = [str(runner.PROJECT_DIR / p) for p in (paths or LINT_PATHS)]
    return [sys.executable, "-m", "sqlfluff", "fix" if fix else "lint", *targets]


def _lint(cmd: Command) -> int:
    """sqlfluff's dbt templater compiles the project: it needs a reachable Postgres warehouse
    (MVX_DBT_* if set, else the settings' one), not any data in it."""
    if not os.environ.get("MVX_DBT_HOST"):
        runner.prepare_environment(replace(cmd.settings, engine="postgres"), cmd.warehouse)
    env = {**os.environ, "MOOVITAMIX_RUN_ID": os.environ.get("MOOVITAMIX_RUN_ID", "lint")}
    command = lint_command(cmd.args.paths, fix=cmd.args.fix)
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    commands = Commands("python -m dbt_project", __doc__)
    build = commands.add("build", _build, "dbt build: seeds, models and tests, in one process")
    build.add_argument("-s", "--select", nargs="+", help="dbt node selection")
    build.add_argument("--exclude", nargs="+", help="dbt nodes to leave out")
    build.add_argument(
        "--exclude-unit-tests", action="store_true", help="skip dbt unit tests (the daily run)"
    )
    build.add_argument(
        "--full-refresh", action="store_true", help="rebuild incremental models from scratch"
    )
    docs = commands.add("docs", _docs, "dbt docs generate [and dbt docs serve]")
    docs.add_argument("--serve", action="store_true", help="serve the site until Ctrl-C")
    docs.add_argument("--host", default="127.0.0.1", help="address to serve on (127.0.0.1)")
    docs.add_argument("--port", type=int, default=8080, help="port to serve on (8080)")
    commands.add("freshness", _freshness, "dbt source freshness of schema raw")
    lint = commands.add("lint", _lint, "sqlfluff lint of the project's SQL")
    lint.add_argument("paths", nargs="*", help=f"under dbt_project/ (default: {LINT_PATHS})")
    lint.add_argument("--fix", action="store_true", help="sqlfluff fix instead of lint")
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
