"""What server the warehouse URL reaches, checked before anything is written to it.

The project's SQL runs on Postgres 14 through 18 (the maintained releases); an older server is
refused with one line, before any database, schema or role is created. The line every entry
point logs on start names the server's version and the URL, password masked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

MIN_VERSION_NUM = 140000  # server_version_num of Postgres 14.0
NEWEST_TESTED_MAJOR = 18
SUPPORTED = f"Postgres 14 to {NEWEST_TESTED_MAJOR}"


class UnsupportedServer(RuntimeError):
    """The server is too old (or says no version); the message is one line for the user."""


@dataclass(frozen=True)
class ServerInfo:
    version_num: int  # server_version_num: 150018 is 15.18, 90624 is 9.6.24
    version: str  # server_version: "15.18 (Debian 15.18-0+deb12u1)"

    @property
    def major(self) -> int:
        return self.version_num // 10000

    @property
    def name(self) -> str:
        return f"PostgreSQL {self.version.split(' ', 1)[0]}" if self.version else "PostgreSQL"


def parse_version_num(value: object) -> int:
    """`server_version_num` as an int; UnsupportedServer if the server sent something else."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise UnsupportedServer(
            f"cannot read the server's version (server_version_num {value!r}): the warehouse "
            f"must be {SUPPORTED}"
        )
    return number


def server_info(version_num: object, version: str) -> ServerInfo:
    return ServerInfo(parse_version_num(version_num), str(version or "").strip())


def check_supported(info: ServerInfo) -> None:
    """Raise UnsupportedServer below 14; a newer major than tested is only a warning."""
    if info.version_num < MIN_VERSION_NUM:
        raise UnsupportedServer(
            f"the warehouse server is {info.name}, which MooVitamix does not support: it needs "
            f"{SUPPORTED} (upgrade the server, or point WAREHOUSE_URL at a supported one)"
        )
    if info.major > NEWEST_TESTED_MAJOR:
        log.warning("%s is newer than the releases tested (%s)", info.name, SUPPORTED)


def start_line(info: ServerInfo, masked_url: str, source: str) -> str:
    """'warehouse: PostgreSQL 15.18 at postgresql://mvx:****@db:5432/moovitamix (WAREHOUSE_URL)'"""
    return f"warehouse: {info.name} at {masked_url} ({source})"
