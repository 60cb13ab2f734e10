"""The suite's seal (a pytest plugin that tests/conftest.py loads): nothing of the developer's
reaches a test, and nothing a test does reaches the developer's files or the network.

- Environment: no dotenv file (MOOVITAMIX_ENV_FILE set empty), every MOOVITAMIX_* variable and
  WAREHOUSE_URL, ALERT_WEBHOOK_URL, LAKE_URL, SPARK_MASTER, SERVING_* and PG* removed, then the
  data, logs and dbt target/log dirs set to a temp dir of the session. Tests set what they need.
- Repo guard: the session fails if `git status` of the repo (tracked changes, untracked files,
  and the ignored files outside .venv and caches) differs between its start and its end.
- Network guard: a connect or a name lookup in this process to anything but loopback is refused
  and fails the test (or the session, when no test was running). Subprocesses are out of its
  reach: they get the environment above, and the tests that start them use loopback URLs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# Switches of the suite itself, kept from the caller's environment.
KEPT = frozenset({"MOOVITAMIX_TEST_PG_BIN", "MOOVITAMIX_REQUIRE_SYSTEM_PG"})
REMOVED_PREFIXES = ("MOOVITAMIX_", "SERVING_", "PG")
REMOVED = frozenset(
    {"WAREHOUSE_URL", "ALERT_WEBHOOK_URL", "LAKE_URL", "SPARK_MASTER", "DBT_TARGET_PATH",
     "DBT_LOG_PATH", "DBT_PROFILES_DIR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
     "http_proxy", "https_proxy", "all_proxy"}
)  # fmt: skip
# Ignored paths whose changes are not the tests': the interpreter, bytecode, tool caches, and
# the cluster files of a developer's running embedded Postgres.
UNWATCHED_NAMES = frozenset({".venv", "__pycache__", ".ruff_cache", ".pytest_cache", ".git"})
UNWATCHED_PATHS = frozenset({".data/postgres"})


def sealed_environment(root: Path) -> dict[str, str]:
    """os.environ without anything that configures the project, plus the suite's own settings:
    no dotenv file, the postgres engine, and data, logs and dbt's files under `root`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key in KEPT or not (key in REMOVED or key.startswith(REMOVED_PREFIXES))
    }
    env.update(
        MOOVITAMIX_ENV_FILE="",
        MOOVITAMIX_ENGINE="postgres",
        MOOVITAMIX_LOG_RETENTION_DAYS="30",
        MOOVITAMIX_DATA_DIR=str(root / "data"),
        MOOVITAMIX_LOGS_DIR=str(root / "logs"),
        MOOVITAMIX_CREDENTIALS_FILE=str(root / "credentials" / "credentials.pgpass"),
        DBT_TARGET_PATH=str(root / "dbt-target"),
        DBT_LOG_PATH=str(root / "dbt-logs"),
    )
    return env


# Generated or private paths a copy of the project leaves out (.gitignore's, and .git).
NOT_COPIED = (".git", ".venv", ".data", ".env", "logs", "reports", "artifacts", "target",
              "uncommitted", "__pycache__", ".ruff_cache", ".pytest_cache", "bench")  # fmt: skip


def copy_project(destination: Path) -> Path:
    """The repo's code in `destination` (no .env, no generated files), with .venv linked to the
    repo's: a run started there (`bin/daily`, `python -m ...` with it as the working directory)
    has it as its project root, so its reports, artifacts, dbt target and GX files land there."""
    shutil.copytree(REPO, destination, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True)
    (destination / ".venv").symlink_to(REPO / ".venv")
    return destination


# --- the repo guard -------------------------------------------------------------------------


def _git(*args: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, check=True, timeout=120
    ).stdout
    return [entry.decode(errors="surrogateescape") for entry in out.split(b"\0") if entry]


def _unwatched(relative: str) -> bool:
    parts = Path(relative).parts
    return bool(UNWATCHED_NAMES.intersection(parts)) or any(
        relative.rstrip("/") == p or relative.startswith(p + "/") for p in UNWATCHED_PATHS
    )


def _fingerprint(path: Path, content: bool) -> str:
    if path.is_symlink():
        return f"link:{path.readlink()}"
    if path.is_dir():
        return "dir"
    if not path.exists():
        return "missing"
    if content:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def repo_state() -> dict[str, str]:
    """Every path git reports as changed or untracked (with its content's hash) and every
    ignored file outside the unwatched ones (with its size and mtime)."""
    state: dict[str, str] = {}
    entries = iter(_git("status", "--porcelain=v1", "-z", "--untracked-files=all"))
    for entry in entries:
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":  # a rename or copy: its source follows as an entry of its own
            state[next(entries, "")] = f"{code}:source of {path}"
        state[path] = code + ":" + _fingerprint(REPO / path, content=True)
    ignored = [
        e[3:] for e in _git("status", "--porcelain=v1", "-z", "--ignored") if e.startswith("!!")
    ]
    for relative in ignored:
        if _unwatched(relative):
            continue
        top = REPO / relative
        state[relative] = "ignored:" + _fingerprint(top, content=False)
        if top.is_dir() and not top.is_symlink():
            for folder, dirs, files in os.walk(top):
                here = Path(folder)
                dirs[:] = [d for d in dirs if not _unwatched(str((here / d).relative_to(REPO)))]
                for name in dirs + files:
                    path = here / name
                    state[str(path.relative_to(REPO))] = "ignored:" + _fingerprint(path, False)
    return state


def changed_paths(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


# --- the network guard ----------------------------------------------------------------------


class OutsideNetworkError(ConnectionRefusedError):
    """A test tried to reach something that is not loopback."""


_violations: list[str] = []
_lock = threading.Lock()
_real = {
    "connect": socket.socket.connect,
    "connect_ex": socket.socket.connect_ex,
    "getaddrinfo": socket.getaddrinfo,
    "create_connection": socket.create_connection,
}


def is_loopback(host: Any) -> bool:
    """Loopback names and addresses (and None, the local host of getaddrinfo)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    name = str(host).strip("[]").split("%", 1)[0].rstrip(".").lower()
    if name in ("", "localhost") or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what: str) -> OutsideNetworkError:
    message = f"the tests' network guard refused {what}: only loopback is allowed"
    with _lock:
        _violations.append(message)
    return OutsideNetworkError(message)


def _check_address(sock: socket.socket, address: Any) -> None:
    inet = sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple)
    if inet and not is_loopback(address[0]):
        raise _refuse(f"a connection to {address[0]}:{address[1]}")


def _connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address)
    return _real["connect"](self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address)
    return _real["connect_ex"](self, address)


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not is_loopback(host):
        raise _refuse(f"a name lookup of {host!r}")
    return _real["getaddrinfo"](host, *args, **kwargs)


def _create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
    if not is_loopback(address[0]):
        raise _refuse(f"a connection to {address[0]}:{address[1]}")
    return _real["create_connection"](address, *args, **kwargs)


def install_network_guard() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _getaddrinfo
    socket.create_connection = _create_connection  # type: ignore[assignment]


def remove_network_guard() -> None:
    socket.socket.connect = _real["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = _real["connect_ex"]  # type: ignore[method-assign]
    socket.getaddrinfo = _real["getaddrinfo"]
    socket.create_connection = _real["create_connection"]  # type: ignore[assignment]


def take_violations() -> list[str]:
    with _lock:
        taken = list(_violations)
        _violations.clear()
    return taken


# --- the hooks ------------------------------------------------------------------------------

_saved_environ: dict[str, str] = {}
_session_dir: Path | None = None
_repo_before: dict[str, str] | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Seal the environment before collection: module-level code sees it too."""
    global _session_dir
    _saved_environ.update(os.environ)
    _session_dir = Path(tempfile.mkdtemp(prefix="moovitamix-tests-"))
    sealed = sealed_environment(_session_dir)
    os.environ.clear()
    os.environ.update(sealed)
    install_network_guard()


def pytest_unconfigure(config: pytest.Config) -> None:
    remove_network_guard()
    os.environ.clear()
    os.environ.update(_saved_environ)
    if _session_dir is not None:
        shutil.rmtree(_session_dir, ignore_errors=True)


def _in_git_worktree() -> bool:
    try:
        return _git("rev-parse", "--show-toplevel")[0].strip() == str(REPO)
    except (OSError, subprocess.SubprocessError, IndexError):
        return False  # a copy of the repo without git (the mutation check's): nothing to guard


def pytest_sessionstart(session: pytest.Session) -> None:
    global _repo_before
    if _in_git_worktree():
        _repo_before = repo_state()


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Each test starts from the sealed environment: what a test (or the code it runs in
    process, e.g. a daily run exporting MOOVITAMIX_RUN_ID for its children) sets in os.environ
    is undone after it."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test whose body tried the outside network fails, even if the code under test coped.
    (Those of fixtures and background threads outside a test fail the session instead.)"""
    with _lock:
        start = len(_violations)
    result = yield
    with _lock:
        violations = _violations[start:]
        del _violations[start:]
    if violations:
        pytest.fail("\n".join(violations), pytrace=False)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    problems: list[str] = []
    if violations := take_violations():
        problems.append("connections outside loopback:\n  " + "\n  ".join(violations))
    if _repo_before is not None:
        changed = changed_paths(_repo_before, repo_state())
        if changed:
            problems.append(
                f"the test session changed {len(changed)} path(s) in the repo {REPO}:\n  "
                + "\n  ".join(changed[:50])
            )
    if problems:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "the suite's seal is broken (tests/hermetic.py)", red=True)
            for problem in problems:
                reporter.write_line(problem, red=True, bold=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
