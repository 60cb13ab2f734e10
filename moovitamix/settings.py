"""Settings from the environment, with a git-ignored `.env` as a fallback: the environment always
wins, so cron and CI can override anything. MOOVITAMIX_ENV_FILE names another dotenv file, or
none when empty (the tests' setting: nothing of a developer's `.env` reaches them)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_FILE_VARIABLE = "MOOVITAMIX_ENV_FILE"
DEFAULT_DATABASE = "moovitamix"
ENGINES = ("postgres", "spark")
# MOOVITAMIX_MVX_LOADER_LOGIN_PASSWORD=...: a project login's password from the environment
LOGIN_PASSWORD_PREFIX, LOGIN_PASSWORD_SUFFIX = "MOOVITAMIX_", "_PASSWORD"

# Telemetry of the tools we run. Nothing at run time may call the internet.
OFFLINE_ENV = {
    "RUNTIME__DLTHUB_TELEMETRY": "false",
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


@dataclass(frozen=True)
class Settings:
    api_url: str | None
    warehouse_url: str | None
    alert_webhook_url: str | None
    data_dir: Path
    logs_dir: Path
    project_root: Path = PROJECT_ROOT
    log_retention_days: float = 30.0  # run logs older than this are deleted (0: keep all)
    engine: str = "postgres"  # where raw, staging and marts live: "postgres" or "spark"
    lake_url: str | None = None  # the raw Parquet lake of the Spark engine (None: data_dir/lake)
    spark_master: str = "local[*]"  # the Spark engine's master (or a Thrift/Connect endpoint)
    # the project logins' passwords (.pgpass format, 0600); None: moovitamix.credentials'
    # default, outside the repo (~/.config/moovitamix/credentials.pgpass)
    credentials_file: Path | None = None
    # project logins' passwords given as MOOVITAMIX_<LOGIN>_PASSWORD (e.g. a DBA's logins on a
    # managed service): login -> password, over the credentials file's
    login_passwords: Mapping[str, str] = field(default_factory=dict)
    # the run process's memory a step may start beside the build under (orchestrator/daily.py):
    # it does only if its last recorded rise, beside the build, fits (0: never beside it)
    memory_budget_mb: float = 2048.0

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def uses_embedded_warehouse(self) -> bool:
        return not self.warehouse_url

    @property
    def lake(self) -> str:
        """The lake's URL (`file:///...`, `s3://...`): LAKE_URL, or `data_dir/lake`."""
        return self.lake_url or (self.data_dir / "lake").as_uri()

    @property
    def spark_dir(self) -> Path:
        """The local Spark engine's own files: metastore (Derby) and managed tables."""
        return self.data_dir / "spark"


def env_file_values(
    environ: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT
) -> dict[str, str]:
    """The dotenv fallback: `root/.env`, or the file MOOVITAMIX_ENV_FILE (in `environ`, default
    `os.environ`) names, relative to `root`; set but empty, no file. A missing file reads as {}."""
    named = (os.environ if environ is None else environ).get(ENV_FILE_VARIABLE)
    if named is not None and not named.strip():
        return {}
    path = root / named.strip() if named is not None else root / ".env"
    if not path.is_file():  # /dev/null and the like read as empty too
        return {}
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def load_settings(environ: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT) -> Settings:
    """Read settings: `environ` (default `os.environ`) over the dotenv file (`root/.env` unless
    MOOVITAMIX_ENV_FILE says otherwise). Empty means unset."""
    values = {**env_file_values(environ, root), **(os.environ if environ is None else environ)}

    def get(key: str) -> str | None:
        value = values.get(key, "").strip()
        return value or None

    data_dir = get("MOOVITAMIX_DATA_DIR")
    logs_dir = get("MOOVITAMIX_LOGS_DIR")
    engine = (get("MOOVITAMIX_ENGINE") or "postgres").lower()
    if engine not in ENGINES:
        raise ValueError(f"MOOVITAMIX_ENGINE={engine!r}: expected one of {', '.join(ENGINES)}")
    credentials = get("MOOVITAMIX_CREDENTIALS_FILE")
    lake_url = get("LAKE_URL")
    if lake_url and "://" not in lake_url:  # a plain path: relative to where the run starts
        lake_url = Path(lake_url).resolve().as_uri()
    return Settings(
        api_url=get("MOOVITAMIX_API_URL"),
        warehouse_url=get("WAREHOUSE_URL"),
        alert_webhook_url=get("ALERT_WEBHOOK_URL"),
        data_dir=Path(data_dir).resolve() if data_dir else root / ".data",
        logs_dir=Path(logs_dir).resolve() if logs_dir else root / "logs",
        project_root=root,
        log_retention_days=float(get("MOOVITAMIX_LOG_RETENTION_DAYS") or 30),
        engine=engine,
        lake_url=lake_url,
        spark_master=get("SPARK_MASTER") or "local[*]",
        memory_budget_mb=float(get("MOOVITAMIX_MEMORY_BUDGET_MB") or 2048),
        credentials_file=Path(credentials).expanduser().resolve() if credentials else None,
        login_passwords={
            key[len(LOGIN_PASSWORD_PREFIX) : -len(LOGIN_PASSWORD_SUFFIX)].lower(): value.strip()
            for key, value in values.items()
            if key.startswith(LOGIN_PASSWORD_PREFIX)
            and key.endswith(f"_LOGIN{LOGIN_PASSWORD_SUFFIX}")
            and value.strip()
        },
    )


@contextmanager
def temporary_env(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of the block, then put back what was."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def apply_offline_defaults() -> None:
    """Turn off every tool's telemetry in this process and its children (unless set already)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
