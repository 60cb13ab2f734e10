"""The embedded warehouse: start, reuse, stop, recovery after kills, and clear errors."""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import psutil
import psycopg
import pytest

from moovitamix.connection_url import ConnectionURL
from moovitamix.embedded_warehouse import (
    EmbeddedWarehouse,
    EmbeddedWarehouseError,
    sized_settings,
)
from moovitamix.settings import PROJECT_ROOT
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

FAST = ("-c fsync=off",)


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moovitamix", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


@pytest.fixture
def server(tmp_path: Path):
    server = EmbeddedWarehouse(tmp_path / "postgres", server_options=FAST)
    yield server
    server.stop()


def test_start_creates_reuses_and_stops(server: EmbeddedWarehouse) -> None:
    assert not server.status().running
    url = server.start()
    with psycopg.connect(url.url()) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    first = server.status()
    assert first.running and first.pid
    with psycopg.connect(url.url()) as conn:  # sized for the machine; the caller's options win
        sized = sized_settings()
        assert conn.execute("show wal_level").fetchone() == ("minimal",)
        assert conn.execute("show max_wal_size").fetchone() == (sized["max_wal_size"],)
        shared = conn.execute("select setting::bigint * 8192 / 1048576 || 'MB' from pg_settings"
                              " where name = 'shared_buffers'").fetchone()  # fmt: skip
        assert shared == (sized["shared_buffers"],)
        assert conn.execute("show fsync").fetchone() == ("off",)  # FAST
    assert server.log_path.stat().st_mode & 0o777 == 0o600, "the server log is private"

    assert server.start() == url  # reused: same server, no second postmaster
    assert server.status().pid == first.pid

    assert server.stop() is True
    assert not server.status().running
    assert server.stop() is False
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url.url(), connect_timeout=2)


@pytest.mark.parametrize(
    ("gigabytes", "shared_buffers", "work_mem", "maintenance_work_mem"),
    [
        (1, "128MB", "4MB", "64MB"),
        (24, "3072MB", "48MB", "768MB"),
        (512, "4096MB", "64MB", "1024MB"),
    ],
)
def test_settings_follow_the_machines_memory_within_bounds(
    gigabytes: int, shared_buffers: str, work_mem: str, maintenance_work_mem: str
) -> None:
    settings = sized_settings(gigabytes * 2**30)
    assert settings["shared_buffers"] == shared_buffers
    assert settings["work_mem"] == work_mem
    assert settings["maintenance_work_mem"] == maintenance_work_mem
    assert settings["effective_cache_size"] == f"{min(65536, max(512, gigabytes * 512))}MB"


def test_concurrent_starts_share_one_server(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres"
    code = f"""
        from pathlib import Path
        from moovitamix.embedded_warehouse import EmbeddedWarehouse
        server = EmbeddedWarehouse(Path({str(pgdata)!r}), server_options={FAST!r})
        server.start()
        print(server.status().pid)
    """
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        pids = {proc.communicate(timeout=120)[0].strip() for proc in procs}
        assert all(proc.returncode == 0 for proc in procs)
        assert len(pids) == 1 and pids != {""}
    finally:
        EmbeddedWarehouse(pgdata).stop()


def test_server_left_by_a_killed_owner_is_reused(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from pathlib import Path
            from moovitamix.embedded_warehouse import EmbeddedWarehouse
            EmbeddedWarehouse(Path({str(pgdata)!r})).start()
            print("up", flush=True)
            time.sleep(600)
        """),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        server = EmbeddedWarehouse(pgdata)
        before = server.status()
        assert before.running, "the server outlives its owner"
        server.start()
        assert server.status().pid == before.pid
    finally:
        EmbeddedWarehouse(pgdata).stop()


def test_killed_server_is_restarted_cleanly(server: EmbeddedWarehouse) -> None:
    url = server.start()
    with psycopg.connect(url.url(), autocommit=True) as conn:
        conn.execute("create database survivor")
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # leaves a stale postmaster.pid and orphaned backends
    wait_until(lambda: not server.status().running, "the killed server to be seen down")

    url = server.start()
    assert server.status().pid != pid
    with psycopg.connect(url.with_database("survivor").url()) as conn:
        assert conn.execute("select current_database()").fetchone() == ("survivor",)


def test_cli_creates_the_database_and_schemas(tmp_path: Path) -> None:
    env = {"MOOVITAMIX_DATA_DIR": str(tmp_path / "data"), "WAREHOUSE_URL": ""}
    try:
        started = _cli("warehouse", "start", env=env)
        assert started.returncode == 0, started.stderr
        assert "warehouse ready: postgresql://postgres:" in started.stdout
        status = _cli("warehouse", "status", env=env)
        assert status.returncode == 0 and "running" in status.stdout
        schemas = _cli(
            "warehouse",
            "psql",
            "-At",
            "-c",
            "select string_agg(nspname, ',' order by nspname) from pg_namespace "
            "where nspname in ('raw','staging','marts','recommendations','ml',"
            "'monitoring')",
            env=env,
        )
        assert schemas.stdout.strip() == "marts,ml,monitoring,raw,recommendations,staging"
    finally:
        stopped = _cli("warehouse", "stop", env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert _cli("warehouse", "status", env=env).returncode == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://bob:hunter2@127.0.0.1:1/wh", "host 127.0.0.1:1, database wh"),
        # '!' is no host-name character: the resolver rejects the name without asking any DNS
        ("postgresql://bob:hunter2@no-such-host!.invalid/wh", "no-such-host!.invalid"),
    ],
)
def test_unreachable_warehouse_url_gives_one_clear_line(
    tmp_path: Path, url: str, expected: str
) -> None:
    result = _cli(
        "warehouse", "start", env={"WAREHOUSE_URL": url, "MOOVITAMIX_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot reach the warehouse") and expected in lines[0]
    assert "hunter2" not in result.stderr + result.stdout
    assert not (tmp_path / "postgres").exists(), "nothing embedded starts when the URL is set"


def test_external_url_to_missing_database_is_created(
    admin_url: ConnectionURL,
    tmp_path: Path,
) -> None:
    url = admin_url.with_database("made_by_cli")
    result = _cli(
        "warehouse", "url", env={"WAREHOUSE_URL": url.url(), "MOOVITAMIX_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url.url()) as conn:
        assert conn.execute(
            "select count(*) from pg_namespace where nspname = 'raw'"
        ).fetchone() == (1,)


# ---- the socket directory of a long data path (SECURITY.md, "other local users") ------------


@pytest.fixture
def long_path_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddedWarehouse:
    """A server whose data path is too long for a socket path: its socket goes in the temp dir
    (here the test's own), as /tmp/mvx-pg-<hash>. Run as the current OS user."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(EmbeddedWarehouse, "_os_user", property(lambda self: None))
    return EmbeddedWarehouse(tmp_path / ("d" * 100) / "postgres")


def _short_dir(tmp_path: Path) -> Path:
    (found,) = tmp_path.glob("mvx-pg-*")
    return found


def test_a_long_data_path_puts_the_socket_in_a_private_directory(
    long_path_server: EmbeddedWarehouse, tmp_path: Path
) -> None:
    socket_dir = long_path_server._socket_dir()
    assert socket_dir.parent == tmp_path and socket_dir.name.startswith("mvx-pg-")
    assert stat.S_IMODE(socket_dir.lstat().st_mode) == 0o700
    assert socket_dir.lstat().st_uid == os.geteuid()
    socket_dir.chmod(0o755)  # loosened since: tightened again on the next start
    assert long_path_server._socket_dir() == socket_dir
    assert stat.S_IMODE(socket_dir.lstat().st_mode) == 0o700


def test_a_socket_directory_that_is_a_symlink_is_refused(
    long_path_server: EmbeddedWarehouse, tmp_path: Path
) -> None:
    name = long_path_server._socket_dir().name
    (tmp_path / name).rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / name).symlink_to(elsewhere)
    with pytest.raises(EmbeddedWarehouseError, match="not ours"):
        long_path_server._socket_dir()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755, "nothing done through the link"


def test_a_socket_directory_of_another_user_is_refused(
    long_path_server: EmbeddedWarehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_dir = long_path_server._socket_dir()
    if os.geteuid() == 0:
        os.chown(socket_dir, 65534, 65534)  # nobody's
    else:  # a non-root user cannot give a directory away: be someone else instead
        monkeypatch.setattr(os, "geteuid", lambda: socket_dir.lstat().st_uid + 1)
    with pytest.raises(EmbeddedWarehouseError, match="another user's"):
        long_path_server._socket_dir()


def test_the_suites_server_listens_on_no_tcp_address(embedded_server: EmbeddedWarehouse) -> None:
    """The server every test uses (conftest's `embedded_server`, started as the project starts
    it) has no TCP listener: the setting, its lock file, its sockets and a real connect."""
    url = embedded_server.start()  # the running server, reused
    with psycopg.connect(url.url()) as conn:
        assert conn.execute("show listen_addresses").fetchone() == ("",)
        port = int(conn.execute("show port").fetchone()[0])  # type: ignore[index]
    # postmaster.pid: line 4 the port, line 5 the socket directory, line 6 the first TCP address
    lines = (embedded_server.pgdata / "postmaster.pid").read_text().splitlines()
    assert lines[3].strip() == str(port) and lines[4].strip() == url.host
    assert lines[5].strip() == "", f"the server listens on {lines[5]!r}"
    pid = embedded_server.status().pid
    assert pid is not None
    assert psutil.Process(pid).net_connections(kind="inet") == [], "the postmaster holds a socket"
    assert psutil.Process(pid).net_connections(kind="unix"), "the control: its Unix socket shows"
    # nothing else on this machine answers on that port either: a TCP connect is refused
    others = [c for c in psutil.net_connections(kind="inet") if c.laddr and c.laddr.port == port]
    assert all(c.pid != pid for c in others)
    if not any(c.status == psutil.CONN_LISTEN for c in others):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            assert probe.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
