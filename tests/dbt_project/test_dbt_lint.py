"""sqlfluff (dbt templater, postgres dialect) on the project's SQL: models, tests, analyses.

The dbt templater compiles the project, which needs a reachable database (for is_incremental()
and the introspective macros); an empty throw-away one is enough.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dbt_project.__main__ import lint_command
from dbt_project.runner import dbt_env
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sql_is_sqlfluff_clean(fresh_warehouse: ConnectionURL, tmp_path) -> None:
    env = {
        **os.environ,
        **dbt_env(fresh_warehouse),
        "DBT_TARGET_PATH": str(tmp_path / "target"),
        "DBT_LOG_PATH": str(tmp_path / "logs"),
    }
    command = [sys.executable, "-m", "dbt_project", "lint"]
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert lint_command()[4:] == [str(PROJECT_ROOT / "dbt_project" / p) for p in
                                   ("models", "tests", "analyses")]  # fmt: skip
