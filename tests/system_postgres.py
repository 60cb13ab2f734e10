"""A throw-away Postgres cluster of the distribution's own server package (Debian's
`postgresql`, e.g. /usr/lib/postgresql/15/bin), for the tests that run on a second server
besides the embedded one: TCP on a free loopback port, scram-sha-256 passwords, as a user of a
managed service would meet it.

The binaries are `MOOVITAMIX_TEST_PG_BIN` when set, else the newest
/usr/lib/postgresql/<major>/bin that holds initdb and pg_ctl.

The server also speaks TLS, with a self-signed certificate for 127.0.0.1 made by openssl when the
cluster is made (`ca_file`: what a client trusts). Plain TCP stays allowed, except for the
members of TLS_ONLY: a client that lost its URL's sslmode (and fell back to PGSSLMODE=disable)
is refused.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psycopg

from moovitamix.connection_url import ConnectionURL
from moovitamix.embedded_warehouse import SERVER_OS_USER

BIN_ENV = "MOOVITAMIX_TEST_PG_BIN"
DISTRIBUTION_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
TLS_ONLY = "mvx_tls_only"  # a group role: its members may connect over TLS only
_START_ATTEMPTS = 5


class SystemPostgresError(RuntimeError):
    pass


def find_bin_dir() -> Path | None:
    """The server binaries to use, or None when there are none on this machine."""
    configured = os.environ.get(BIN_ENV)
    if configured:
        return Path(configured)
    majors = sorted(
        (path for path in DISTRIBUTION_ROOT.glob("*/bin") if path.parent.name.isdigit()),
        key=lambda path: int(path.parent.name),
    )
    usable = [path for path in majors if (path / "initdb").exists() and (path / "pg_ctl").exists()]
    return usable[-1] if usable else None


def self_signed_certificate(directory: Path, name: str, host: str = "127.0.0.1") -> Path:
    """`<name>.crt` and `<name>.key` in `directory`: a self-signed certificate for `host` that
    is its own CA (what a client puts in sslrootcert). Returns the certificate's path."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    result = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(cert),
         "-addext", f"subjectAltName=IP:{host},DNS:localhost",
         "-addext", "basicConstraints=critical,CA:TRUE"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemPostgresError(f"openssl failed: {result.stderr.strip()[-500:]}")
    key.chmod(0o600)
    return cert


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _os_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", name],
            check=True, capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(name)


class SystemPostgres:
    """One cluster in a temp dir of its own, started by `start()`, removed by `stop()`."""

    def __init__(self, bin_dir: Path, *, server_options: Sequence[str] = ()) -> None:
        for tool in ("initdb", "pg_ctl"):
            if not (bin_dir / tool).exists():
                raise SystemPostgresError(f"no {tool} in {bin_dir} (set {BIN_ENV})")
        self.bin_dir = bin_dir
        self.server_options = tuple(server_options)
        self.root = Path(tempfile.mkdtemp(prefix="mvx-syspg-"))
        self.pgdata = self.root / "data"
        self.log_path = self.root / "server.log"
        self.password = secrets.token_urlsafe(16)
        self.ca_file = self.root / "server.crt"  # the server's self-signed certificate
        self.port = 0
        # initdb and the server refuse to run as root: as root, run them as the embedded
        # server's OS user
        self._user = _os_user(SERVER_OS_USER) if os.geteuid() == 0 else None

    def _run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._user:
            kwargs.update(user=self._user.pw_uid, group=self._user.pw_gid, extra_groups=[])
        return subprocess.run(
            [str(self.bin_dir / argv[0]), *argv[1:]],
            capture_output=True, text=True, cwd=self.root, timeout=timeout, check=False,
            **kwargs,  # type: ignore[arg-type]
        )  # fmt: skip

    def _own(self, path: Path) -> None:
        if self._user:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def initdb(self) -> None:
        if self._user:
            for parent in self.root.parents:  # the OS user must reach the temp dir
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
        self._own(self.root)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._own(pwfile)
        result = self._run(
            ["initdb", "-D", str(self.pgdata), "-U", SUPERUSER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-instructions"]
        )  # fmt: skip
        pwfile.unlink()
        if result.returncode != 0:
            raise SystemPostgresError(f"initdb failed: {result.stderr.strip()[-500:]}")
        self_signed_certificate(self.root, "server")
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(f"hostnossl all +{TLS_ONLY} 127.0.0.1/32 reject\n" + hba.read_text())
        for path in (self.root / "server.crt", self.root / "server.key"):
            self._own(path)

    def start(self) -> ConnectionURL:
        """initdb (first time) and start on a free loopback port; the superuser's URL."""
        if not (self.pgdata / "PG_VERSION").exists():
            self.initdb()
        self.log_path.touch(mode=0o600)
        self._own(self.log_path)
        for attempt in range(_START_ATTEMPTS):
            self.port = free_port()
            options = [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.root}",
                "-c unix_socket_permissions=0700",
                "-c ssl=on",
                f"-c ssl_cert_file={self.root / 'server.crt'}",
                f"-c ssl_key_file={self.root / 'server.key'}",
                *self.server_options,
            ]
            result = self._run(
                ["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_path), "-w", "-t", "60",
                 "-o", " ".join(options), "start"]
            )  # fmt: skip
            if result.returncode == 0:
                self._ensure_tls_only_role()
                return self.admin_url()
            if attempt + 1 == _START_ATTEMPTS or "already in use" not in self.log_tail():
                raise SystemPostgresError(
                    f"pg_ctl start failed: {result.stderr.strip()}\n{self.log_tail()}"
                )
        raise AssertionError("unreachable")

    def _ensure_tls_only_role(self) -> None:
        with psycopg.connect(self.admin_url().url(), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (TLS_ONLY,))
            if exists.fetchone() is None:
                conn.execute(f"create role {TLS_ONLY} nologin")

    def admin_url(self) -> ConnectionURL:
        return ConnectionURL(SUPERUSER, self.password, "127.0.0.1", self.port, "postgres")

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def version(self) -> str:
        result = self._run(["pg_ctl", "--version"])
        return result.stdout.strip()
