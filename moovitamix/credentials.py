"""The project logins' passwords, in one secrets file per OS user: `.pgpass` format
(`host:port:database:user:password`, one line per login and server), mode 0600, written
atomically. libpq reads the same file as PGPASSFILE, so a person may keep their own server's
logins there by hand. A group- or other-readable file is refused, as libpq refuses it."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from moovitamix.connection_url import ConnectionURL

FILE_NAME = "credentials.pgpass"


class CredentialsError(RuntimeError):
    """The secrets file cannot be used; the message is one line for the user."""


def default_path() -> Path:
    """`$XDG_CONFIG_HOME/moovitamix/credentials.pgpass` (else under ~/.config): outside any
    repository, readable by this OS user only."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "moovitamix" / FILE_NAME


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def _fields(line: str) -> list[str]:
    fields, current, escaped = [], "", False
    for char in line:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":" and len(fields) < 4:
            fields.append(current)
            current = ""
        else:
            current += char
    return [*fields, current]


def _matches(pattern: str, value: str) -> bool:
    return pattern in ("*", value)


class CredentialsFile:
    """The secrets file at `path`: read the password of a login on a server, store new ones."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _check_mode(self) -> None:
        info = self.path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CredentialsError(
                f"the credentials file {self.path} is readable by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}): chmod 600 it, then rotate the credentials "
                "(make rotate-credentials)"
            )
        if info.st_uid != os.geteuid():
            raise CredentialsError(f"the credentials file {self.path} belongs to another user")

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        self._check_mode()
        return self.path.read_text(encoding="utf-8").splitlines()

    def password(self, server: ConnectionURL, login: str) -> str | None:
        """The password of `login` on the URL's server (host and port; any database), as libpq
        would pick it: the first matching line."""
        for line in self._lines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = _fields(line)
            if len(fields) != 5:
                continue
            host, port, _database, user, password = fields
            if (
                _matches(host, server.host)
                and _matches(port, str(server.port))
                and _matches(user, login)
            ):
                return password
        return None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time (the processes of this OS user sharing the file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def store(self, server: ConnectionURL, passwords: Mapping[str, str]) -> None:
        """Set the passwords of these logins on the URL's server (replacing their lines), and
        replace the file atomically, mode 0600. Call it holding `locked()`."""
        key = f"{_escape(server.host)}:{server.port}:*:"
        kept = [
            line
            for line in self._lines()
            if not any(line.startswith(f"{key}{_escape(login)}:") for login in passwords)
        ]
        added = [f"{key}{_escape(login)}:{_escape(pw)}" for login, pw in passwords.items()]
        text = "\n".join([*kept, *added]) + "\n"
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.path)
