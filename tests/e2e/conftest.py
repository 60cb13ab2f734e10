"""The reference for the end-to-end tests: one clean daily run of day 0, started the way cron
starts it (`env -i`, a minimal PATH, `make -C <repo> daily`), on a warehouse of its own, with a
password in WAREHOUSE_URL (the test server's trust auth ignores it) that must appear nowhere."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from moovitamix.connection_url import ConnectionURL
from tests.conftest import create_warehouse
from tests.e2e.daily_helpers import REPO, SIMULATOR_ARGS, TIMEOUT_S, fingerprint

# A password no file or output of the run may contain.
SECRET = "Sup3r-s3cret-pw-7f3a9c"


@dataclass(frozen=True)
class CleanRun:
    result: subprocess.CompletedProcess[str]
    warehouse: ConnectionURL
    fingerprint: dict[str, tuple[Any, ...]]
    logs_dir: Path
    home: Path


@pytest.fixture(scope="session")
def clean_day0(admin_url: ConnectionURL, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """`make daily` under cron's environment: no API URL (the built-in simulator, with the
    tests' small arguments), the warehouse and directories that a crontab line would set."""
    created = create_warehouse(admin_url, prefix="mvx_e2e_clean")
    warehouse = created.with_user(created.user, SECRET)
    home = tmp_path_factory.mktemp("cron-home")
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "WAREHOUSE_URL": warehouse.url(),
        "MOOVITAMIX_DATA_DIR": str(home / "data"),
        "MOOVITAMIX_LOGS_DIR": str(home / "logs"),
        "MOOVITAMIX_SIMULATOR_ARGS": " ".join(SIMULATOR_ARGS),
    }
    result = subprocess.run(
        ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
         "make", "-C", str(REPO), "--no-print-directory", "daily"],
        cwd=home, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return CleanRun(result, warehouse, fingerprint(warehouse), home / "logs", home)
