"""The suite's seal holds (tests/hermetic.py): a hostile `.env` in the project root changes
nothing a test sees, and the guards refuse what they must."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from serving.config import from_env
from tests.conftest import Webhook
from tests.hermetic import OutsideNetworkError, changed_paths, copy_project, is_loopback

UNREACHABLE_API = "http://127.0.0.1:1"


@pytest.fixture
def hostile_root(tmp_path: Path, webhook: Webhook) -> Path:
    """A copy of the project whose `.env` points the API at nothing, the alerts at `webhook`,
    and the data, logs and warehouse elsewhere."""
    root = copy_project(tmp_path / "project")
    (root / ".env").write_text(
        f"MOOVITAMIX_API_URL={UNREACHABLE_API}\n"
        f"ALERT_WEBHOOK_URL={webhook.url}\n"
        "WAREHOUSE_URL=postgresql://hostile:pw@127.0.0.1:1/hostile\n"
        f"MOOVITAMIX_DATA_DIR={root / 'hostile-data'}\n"
        f"MOOVITAMIX_LOGS_DIR={root / 'hostile-logs'}\n"
        "SERVING_TOKENS=hostile-token\n"
    )
    return root


def _untouched(root: Path, webhook: Webhook) -> None:
    assert webhook.bodies == [], "nothing may reach the .env's webhook"
    assert not (root / "hostile-data").exists() and not (root / "hostile-logs").exists()


def test_the_session_reads_no_dotenv(hostile_root: Path, webhook: Webhook) -> None:
    assert os.environ["MOOVITAMIX_ENV_FILE"] == ""
    settings = load_settings(root=hostile_root)
    assert (settings.api_url, settings.warehouse_url, settings.alert_webhook_url) == (None,) * 3
    assert settings.data_dir == Path(os.environ["MOOVITAMIX_DATA_DIR"])
    assert from_env(root=hostile_root).tokens == ()
    # the control: the same root without the suite's setting reads the hostile file
    assert load_settings({}, root=hostile_root).api_url == UNREACHABLE_API
    _untouched(hostile_root, webhook)


def test_ingestion_without_an_api_url_ignores_the_dotenv(
    hostile_root: Path, webhook: Webhook, warehouse_env: ConnectionURL
) -> None:
    """The path of tests/ingestion/test_command.py that a `.env`'s API URL used to break."""
    done = subprocess.run(
        [sys.executable, "-m", "ingestion", "--simulator-args", "--users 40 --tracks 30",
         "--no-progress"],
        cwd=hostile_root, env=dict(os.environ), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == exit_codes.OK, done.stderr
    assert "MOOVITAMIX_API_URL is unset: started the built-in simulator" in done.stderr
    _untouched(hostile_root, webhook)


def _daily(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(root / "bin" / "daily")], cwd=root, capture_output=True, text=True, timeout=600,
        check=False, env={**os.environ, "MOOVITAMIX_API_URL": UNREACHABLE_API, **env},
    )  # fmt: skip


def test_a_failed_daily_run_alerts_no_dotenv_webhook(
    hostile_root: Path, webhook: Webhook, warehouse_env: ConnectionURL
) -> None:
    failed = _daily(hostile_root)
    assert failed.returncode == exit_codes.SOURCE_UNREACHABLE, failed.stderr
    assert "FAILED in step 'source'" in failed.stderr
    _untouched(hostile_root, webhook)
    # the control: the same failure with the webhook in the environment does reach it
    alerted = _daily(hostile_root, ALERT_WEBHOOK_URL=webhook.url)
    assert alerted.returncode == exit_codes.SOURCE_UNREACHABLE, alerted.stderr
    assert any("daily run failed in step source" in b["text"] for b in webhook.bodies)


def test_the_network_guard_refuses_all_but_loopback() -> None:
    for host in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "0.0.0.0", None):
        assert is_loopback(host), host
    for host in ("10.255.255.53", "example.com", "no-such-host.invalid", "8.8.8.8", "::ffff:1"):
        assert not is_loopback(host), host
    with pytest.raises(OutsideNetworkError):
        socket.getaddrinfo("example.com", 80)
    with socket.socket() as sock, pytest.raises(OutsideNetworkError):
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed
    from tests.hermetic import take_violations

    assert len(take_violations()) == 2  # taken: they were this test's on purpose


def test_the_repo_guard_names_every_change() -> None:
    before = {"a.py": "M:1", "b.txt": "??:2", "reports/": "ignored:dir"}
    after = {"a.py": "M:3", "reports/": "ignored:dir", "artifacts/x": "ignored:1:2"}
    assert changed_paths(before, after) == ["a.py", "artifacts/x", "b.txt"]


def test_environment_changes_of_a_test_1_of_2() -> None:
    """What a test puts in os.environ (here as an in-process daily run does with its run id)..."""
    os.environ["MOOVITAMIX_RUN_ID"] = "leaked-run-id"


def test_environment_changes_of_a_test_2_of_2() -> None:
    """...is gone in the next one (the plugin's `_restore_environ`)."""
    assert "MOOVITAMIX_RUN_ID" not in os.environ
