"""Settings from the environment, with a git-ignored `.env` as a fallback.

The environment always wins over `.env`, so cron and CI can override anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE = "moovitamix"

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

    @property
    def embedded_pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def uses_embedded_warehouse(self) -> bool:
        return not self.warehouse_url


def _env_file_values(root: Path) -> dict[str, str]:
    env_file = root / ".env"
    if not env_file.is_file():
        return {}
    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


def load_settings(environ: Mapping[str, str] | None = None, root: Path = PROJECT_ROOT) -> Settings:
    """Read settings: `environ` (default `os.environ`) over `root/.env`. Empty means unset."""
    values = {**_env_file_values(root), **(os.environ if environ is None else environ)}

    def get(key: str) -> str | None:
        value = values.get(key, "").strip()
        return value or None

    data_dir = get("MOOVITAMIX_DATA_DIR")
    logs_dir = get("MOOVITAMIX_LOGS_DIR")
    return Settings(
        api_url=get("MOOVITAMIX_API_URL"),
        warehouse_url=get("WAREHOUSE_URL"),
        alert_webhook_url=get("ALERT_WEBHOOK_URL"),
        data_dir=Path(data_dir).resolve() if data_dir else root / ".data",
        logs_dir=Path(logs_dir).resolve() if logs_dir else root / "logs",
        project_root=root,
        log_retention_days=float(get("MOOVITAMIX_LOG_RETENTION_DAYS") or 30),
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
