"""Run the dbt project in this process, through one `dbtRunner` invocation per command.

The engine (`Settings.engine`) picks the profile's target. On Postgres (`warehouse`) the
warehouse is resolved from the project's settings (`open_warehouse`: `WAREHOUSE_URL`, or the
embedded Postgres started on demand) and handed to dbt as the MVX_DBT_* variables that
`profiles.yml` reads. On Spark (`spark`) the process's Spark session is started first
(moovitamix.spark) and dbt-spark's session method reuses it; the same settings reach the profile
as MVX_DBT_SPARK_CONF, the lake's URL as MVX_DBT_LAKE_URL (the sources' on-run-start macro).
Project, profiles, target and log paths are absolute, so this works from any working directory.

The run id reaches dbt as the environment variable MOOVITAMIX_RUN_ID (the project's convention,
see moovitamix.run_context), read by the `run_id()` macro; `--vars '{run_id: ...}'` works too,
but changing a var forces dbt to re-parse the whole project (~7 s), an environment variable only
the files that use it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from dbt_project.results import BuildResult, NodeResult
from moovitamix.roles import TRANSFORMER
from moovitamix.run_context import RUN_ID_ENV
from moovitamix.settings import Settings, apply_offline_defaults, temporary_env
from moovitamix.spark import spark_conf, spark_session
from moovitamix.warehouse import open_warehouse

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent
# inside dbt_project/ (git-ignored); dbt's own DBT_TARGET_PATH / DBT_LOG_PATH move them
TARGET_DIR = PROJECT_DIR / "target"
LOG_DIR = PROJECT_DIR / "logs"
MARTS_SCHEMA_ENV = "MVX_DBT_MARTS_SCHEMA"  # see models.moovitamix.marts in dbt_project.yml
SPARK_CONF_ENV = "MVX_DBT_SPARK_CONF"  # profiles.yml, target spark
LAKE_URL_ENV = "MVX_DBT_LAKE_URL"  # macros/lake_sources.sql
TARGETS = {"postgres": "warehouse", "spark": "spark"}  # Settings.engine -> profiles.yml target


def prepare_environment(settings: Settings, run_id: str | None = None) -> str:
    """Export what dbt reads (the engine's connection, the run id, no telemetry); returns the
    profile's target for the settings' engine."""
    apply_offline_defaults()
    if settings.engine == "spark":
        os.environ[SPARK_CONF_ENV] = json.dumps(spark_conf(settings))
        os.environ[LAKE_URL_ENV] = settings.lake
        spark_session(settings)  # dbt-spark's getOrCreate() finds it
        log.debug("dbt on Spark (%s), lake %s", settings.spark_master, settings.lake)
    else:
        url = open_warehouse(settings)
        os.environ.update(url.dbt_env())
        os.environ["MVX_DBT_ROLE"] = TRANSFORMER  # what dbt builds, mvx_transformer owns
        log.debug("dbt warehouse: %s", url.describe())
    if run_id:
        os.environ[RUN_ID_ENV] = run_id
    return TARGETS[settings.engine]


def target_dir() -> Path:
    return Path(os.environ.get("DBT_TARGET_PATH") or TARGET_DIR)


def log_dir() -> Path:
    return Path(os.environ.get("DBT_LOG_PATH") or LOG_DIR)


def common_args(*, quiet: bool = True, target: str | None = None) -> list[str]:
    args = [
        "--project-dir",
        str(PROJECT_DIR),
        "--profiles-dir",
        str(PROJECT_DIR),
        "--target-path",
        str(target_dir()),
        "--log-path",
        str(log_dir()),
    ]
    if target:
        args += ["--target", target]
    return [*args, "--quiet"] if quiet else args


def invoke(
    command: str,
    args: Sequence[str],
    *,
    run_id: str = "",
    quiet: bool = True,
    target: str | None = None,
):
    """One dbtRunner invocation; returns (BuildResult, the raw dbtRunnerResult)."""
    from dbt.cli.main import dbtRunner  # imported late: ~3 s, only when dbt actually runs

    started = time.monotonic()
    argv = [*command.split(), *common_args(quiet=quiet, target=target), *args]
    log.debug("dbt %s", " ".join(argv))
    try:
        outcome = dbtRunner().invoke(argv)
    except Exception as exc:  # dbt raises on some setup errors instead of reporting them
        return (
            BuildResult(command, run_id, False, time.monotonic() - started, error=_one_line(exc)),
            None,
        )
    results = getattr(outcome.result, "results", None) or []
    nodes = [NodeResult.from_dbt(r) for r in results if getattr(r, "node", None) is not None]
    error = _one_line(outcome.exception) if outcome.exception is not None else None
    if not outcome.success and error is None and not any(n.is_bad for n in nodes):
        error = f"dbt reported a failure; details in {log_dir() / 'dbt.log'}"
    result = BuildResult(
        command=command,
        run_id=run_id,
        success=bool(outcome.success),
        seconds=time.monotonic() - started,
        nodes=nodes,
        error=error,
    )
    return result, outcome


def build_args(
    select: Sequence[str] | str | None = None,
    exclude: Sequence[str] | str | None = None,
    *,
    exclude_unit_tests: bool = True,
    full_refresh: bool = False,
) -> list[str]:
    args: list[str] = []
    if select:
        args += ["--select", *([select] if isinstance(select, str) else select)]
    if exclude:
        args += ["--exclude", *([exclude] if isinstance(exclude, str) else exclude)]
    if exclude_unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    if full_refresh:
        args.append("--full-refresh")
    return args


def run_build(
    settings: Settings,
    run_id: str,
    select: Sequence[str] | str | None = None,
    exclude_unit_tests: bool = True,
    *,
    exclude: Sequence[str] | str | None = None,
    full_refresh: bool = False,
    marts_schema: str | None = None,
) -> BuildResult:
    """`dbt build` (seeds, models, tests) on the settings' warehouse, in one invocation.

    The daily run excludes the unit tests (they test the code, not the data: `make test` runs
    them, on Postgres only); `success` is false if any model, seed or test errored or failed
    (warnings pass).
    `marts_schema` builds the marts there instead of `marts` (the daily run's candidate).
    """
    target = prepare_environment(settings, run_id)
    # The unit tests give their inputs in raw's Postgres shape (dlt's SCD2 columns, SQL
    # fixtures): Postgres only. The Spark history has its own test (tests/dbt_project).
    exclude_unit_tests = exclude_unit_tests or settings.engine == "spark"
    args = build_args(
        select, exclude, exclude_unit_tests=exclude_unit_tests, full_refresh=full_refresh
    )
    if marts_schema is None:
        result, _ = invoke("build", args, run_id=run_id, target=target)
    else:  # dbt_project.yml reads the variable
        with temporary_env(MARTS_SCHEMA_ENV, marts_schema):
            result, _ = invoke("build", args, run_id=run_id, target=target)
    return result


def run_docs_generate(settings: Settings, run_id: str = "") -> BuildResult:
    """`dbt docs generate` (manifest and catalog into dbt_project/target)."""
    target = prepare_environment(settings, run_id or None)
    result, _ = invoke("docs generate", [], run_id=run_id, target=target)
    return result


def run_freshness(settings: Settings, run_id: str = "") -> BuildResult:
    """`dbt source freshness`: how long since raw's tables last got a new version."""
    target = prepare_environment(settings, run_id or None)
    result, _ = invoke("source freshness", [], run_id=run_id, target=target)
    return result


def _one_line(exc: BaseException | object) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__
