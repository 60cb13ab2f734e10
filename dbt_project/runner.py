"""Run dbt in this process: one `dbtRunner` invocation per command, the engine's target. The
opened warehouse reaches `profiles.yml` as MVX_DBT_*, the run id as MOOVITAMIX_RUN_ID (see the
README); on Spark, dbt-spark's session method reuses this process's Spark session."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from dbt_project.contracts import ENFORCED_TAG
from dbt_project.results import BuildResult, NodeResult
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.roles import TRANSFORMER
from moovitamix.run_context import RUN_ID_ENV
from moovitamix.settings import Settings, apply_offline_defaults, temporary_env
from moovitamix.spark import spark_conf, spark_session

log = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent
MARTS_SCHEMA_ENV = "MVX_DBT_MARTS_SCHEMA"  # dbt_project.yml, models.moovitamix.marts
ENFORCED_SELECTOR = f"tag:{ENFORCED_TAG}"  # data tests that Postgres constraints prove
TARGETS = {"postgres": "warehouse", "spark": "spark"}  # Settings.engine -> profiles.yml target
# libpq variables that say what a session does, or that the profile already names: dbt gets the
# others (how to reach the server: TLS, GSS, authentication) from the environment.
_NOT_FOR_DBT = {"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"} | {
    "PGTARGETSESSIONATTRS", "PGAPPNAME", "PGOPTIONS",
}  # fmt: skip


def dbt_env(url: ConnectionURL) -> dict[str, str]:
    """The variables `profiles.yml` reads with env_var(), and the URL's TLS options (sslmode,
    sslrootcert, ...) as the PG* variables libpq reads under dbt-postgres."""
    profile = {"HOST": url.host, "PORT": str(url.port), "USER": url.user}
    profile |= {"PASSWORD": url.password, "DATABASE": url.database}
    libpq = {key: value for key, value in url.libpq_env().items() if key not in _NOT_FOR_DBT}
    return {f"MVX_DBT_{key}": value for key, value in profile.items()} | libpq


def prepare_environment(
    settings: Settings, warehouse: ConnectionURL | None, run_id: str | None = None
) -> str:
    """Export what dbt reads (the engine's connection, the run id, no telemetry); returns the
    profile's target for the settings' engine. `warehouse`: the opened one (unused on Spark)."""
    apply_offline_defaults()
    if settings.engine == "spark":
        os.environ["MVX_DBT_SPARK_CONF"] = json.dumps(spark_conf(settings))
        os.environ["MVX_DBT_LAKE_URL"] = settings.lake
        spark_session(settings)  # dbt-spark's getOrCreate() finds it
    elif warehouse is None:
        raise ValueError("dbt on Postgres needs the opened warehouse's URL")
    else:
        os.environ.update(dbt_env(warehouse))
        os.environ["MVX_DBT_ROLE"] = TRANSFORMER  # what dbt builds, mvx_transformer owns
    if run_id:
        os.environ[RUN_ID_ENV] = run_id
    return TARGETS[settings.engine]


def target_dir() -> Path:
    """dbt_project/target, or dbt's own DBT_TARGET_PATH (the tests' private one)."""
    return Path(os.environ.get("DBT_TARGET_PATH") or PROJECT_DIR / "target")


def invoke(
    command: str,
    args: Sequence[str] = (),
    *,
    run_id: str = "",
    target: str = "",
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> tuple:
    """One dbtRunner invocation with the project's paths; (BuildResult, dbtRunnerResult).
    `callbacks` get dbt's events as they happen (dbtRunner's own argument)."""
    from dbt.cli.main import dbtRunner  # imported late: only when dbt actually runs

    log_dir = os.environ.get("DBT_LOG_PATH") or str(PROJECT_DIR / "logs")
    argv = [
        *command.split(), "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
        "--target-path", str(target_dir()), "--log-path", log_dir, "--quiet",
        *(["--target", target] if target else []), *args,
    ]  # fmt: skip
    log.debug("dbt %s", " ".join(argv))
    started = time.monotonic()
    try:
        outcome = dbtRunner(callbacks=list(callbacks)).invoke(argv)
    except Exception as exc:  # dbt raises some setup errors instead of reporting them
        seconds = time.monotonic() - started
        return BuildResult(command, run_id, False, seconds, error=one_line(exc)), None
    results = getattr(outcome.result, "results", None) or []
    nodes = [NodeResult.from_dbt(r) for r in results if getattr(r, "node", None) is not None]
    error = one_line(outcome.exception) if outcome.exception is not None else None
    if not outcome.success and error is None and not any(n.is_bad for n in nodes):
        error = f"dbt reported a failure; details in {log_dir}/dbt.log"
    seconds = time.monotonic() - started
    return BuildResult(command, run_id, bool(outcome.success), seconds, nodes, error), outcome


def build_args(
    select: Sequence[str] | str | None = None,
    exclude: Sequence[str] | str | None = None,
    *,
    exclude_unit_tests: bool = True,
    full_refresh: bool = False,
) -> list[str]:
    args: list[str] = []
    for flag, nodes in (("--select", select), ("--exclude", exclude)):
        if nodes:
            args += [flag, *([nodes] if isinstance(nodes, str) else nodes)]
    if exclude_unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    return [*args, "--full-refresh"] if full_refresh else args


def run_build(
    settings: Settings,
    run_id: str,
    warehouse: ConnectionURL | None,
    select: Sequence[str] | str | None = None,
    exclude_unit_tests: bool = True,
    *,
    exclude: Sequence[str] | str | None = None,
    full_refresh: bool = False,
    marts_schema: str | None = None,
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> BuildResult:
    """`dbt build` (seeds, models, tests) in one invocation; `success` is false if anything
    errored or failed (warnings pass). `marts_schema` builds the marts there instead of `marts`.
    Unit tests run on Postgres only: their inputs are raw's SCD2 shape. The data tests that a
    mart's enforced constraints prove run on Spark only (dbt_project.contracts.ENFORCED_TAG):
    Postgres checks those as the rows are written. `callbacks`: see `invoke`."""
    target = prepare_environment(settings, warehouse, run_id)
    exclude_unit_tests = exclude_unit_tests or settings.engine == "spark"
    if settings.engine != "spark":
        exclude = [*([exclude] if isinstance(exclude, str) else exclude or []), ENFORCED_SELECTOR]
    args = build_args(
        select, exclude, exclude_unit_tests=exclude_unit_tests, full_refresh=full_refresh
    )
    with temporary_env(MARTS_SCHEMA_ENV, marts_schema) if marts_schema else nullcontext():
        return invoke("build", args, run_id=run_id, target=target, callbacks=callbacks)[0]


def run_dbt(
    settings: Settings, warehouse: ConnectionURL | None, command: str, run_id: str = ""
) -> BuildResult:
    """Another dbt command on the settings' engine: `docs generate`, `source freshness`."""
    target = prepare_environment(settings, warehouse, run_id or None)
    return invoke(command, run_id=run_id, target=target)[0]
