"""The warehouse every step talks to: `WAREHOUSE_URL` when set, else the embedded Postgres.

`open_warehouse()` is the one entry point: it resolves the URL, starts the embedded server if
that is what is in use, refuses a server older than Postgres 14 or a user without the privileges
the run needs before writing anything, makes sure the database, schemas and roles exist, and
returns the connection URL. Errors come out as one line naming host, database and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL, InvalidWarehouseURL
from moovitamix.embedded_warehouse import EmbeddedWarehouse, EmbeddedWarehouseError
from moovitamix.privileges import missing_line, missing_privileges
from moovitamix.roles import SCHEMAS, RolesError, ensure_roles
from moovitamix.settings import DEFAULT_DATABASE, Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
_OPENED: set[ConnectionURL] = set()  # the warehouses this process has prepared
# The project's SQL runs on the maintained Postgres releases.
MIN_VERSION_NUM = 140000  # server_version_num of Postgres 14.0
NEWEST_TESTED_MAJOR = 18
SUPPORTED = f"Postgres 14 to {NEWEST_TESTED_MAJOR}"


class WarehouseUnreachable(RuntimeError):
    """The warehouse could not be reached or prepared; the message is one line for the user."""


class UnsupportedServer(WarehouseUnreachable):
    """The server is too old (or says no version)."""


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


def server_info(version_num: object, version: str) -> ServerInfo:
    """From `server_version_num` and `server_version`; UnsupportedServer if the number is not
    one."""
    number = str(version_num).strip()
    if not number.isdigit() or int(number) == 0:
        raise UnsupportedServer(
            f"cannot read the server's version (server_version_num {version_num!r}): the "
            f"warehouse must be {SUPPORTED}"
        )
    return ServerInfo(int(number), str(version or "").strip())


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


def _reason(exc: BaseException) -> str:
    """The driver's reason in one line, without libpq's prefix that repeats the host."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    reason = lines[0].rsplit(" failed: ", 1)[-1]
    return f"{reason} ({lines[1]})" if len(lines) > 1 else reason


def resolve_url(settings: Settings, *, start: bool = True) -> ConnectionURL:
    """The warehouse URL of these settings; starts the embedded server if needed and asked."""
    if settings.warehouse_url:
        try:
            return ConnectionURL.parse(settings.warehouse_url)
        except InvalidWarehouseURL as exc:
            raise WarehouseUnreachable(f"WAREHOUSE_URL is invalid: {exc}") from None
    server = EmbeddedWarehouse(settings.embedded_pgdata)
    if start:
        try:
            admin = server.start()
        except EmbeddedWarehouseError as exc:
            raise WarehouseUnreachable(
                f"cannot start the embedded Postgres in {settings.embedded_pgdata}: {exc}"
            ) from None
    else:
        running = server.url()
        if running is None:
            raise WarehouseUnreachable(
                f"the embedded Postgres in {settings.embedded_pgdata} is not running"
            )
        admin = running
    return admin.with_database(DEFAULT_DATABASE)


def connect(url: ConnectionURL, *, autocommit: bool = False) -> psycopg.Connection:
    """A psycopg connection (use it in `with`); an unreachable server raises
    WarehouseUnreachable, one line."""
    try:
        return psycopg.connect(url.url(), connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise WarehouseUnreachable(
            f"cannot reach the warehouse ({url.describe()}): {_reason(exc)}"
        ) from None


def connect_server(url: ConnectionURL) -> tuple[psycopg.Connection, bool]:
    """An autocommit connection to the URL's database, or to `postgres` while that one does not
    exist yet (to read the server or create it), and whether the database exists."""
    try:
        return connect(url, autocommit=True), True
    except WarehouseUnreachable as exc:
        if "does not exist" not in str(exc):
            raise
    return connect(url.with_database("postgres"), autocommit=True), False


def _server_info(conn: psycopg.Connection) -> ServerInfo:
    row = conn.execute("select current_setting('server_version_num')").fetchone()
    return server_info(row[0] if row else None, conn.info.parameter_status("server_version") or "")


def inspect_server(url: ConnectionURL) -> ServerInfo:
    """The server's version, read through the URL's database or `postgres`: nothing written."""
    conn, _ = connect_server(url)
    with conn:
        return _server_info(conn)


def _create_database(conn: psycopg.Connection, database: str) -> None:
    try:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
        log.info("created database %s", database)
    except psycopg.errors.DuplicateDatabase:
        pass  # another process won the race


def ensure_database(url: ConnectionURL) -> None:
    """Create the database if it is missing (needs CREATEDB on the server's `postgres` db)."""
    conn, exists = connect_server(url)
    with conn:
        if not exists:
            _create_database(conn, url.database)


def ensure_schemas(url: ConnectionURL) -> None:
    with connect(url) as conn:
        for schema in SCHEMAS:
            conn.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))


def ensure_tables(conn: psycopg.Connection, tables: Sequence[str], ddl: str) -> None:
    """Run `ddl` (create ... if not exists, comments) unless every one of `tables` exists.

    Skipping it matters under least privilege: a step's role may write a monitoring table
    another role created, but `comment on table` (even unchanged) needs its owner."""
    present = conn.execute(
        "select count(*) from unnest(%s::text[]) as name where to_regclass(name) is not null",
        (list(tables),),
    ).fetchone()
    if not present or present[0] < len(tables):
        conn.execute(ddl)


def take_publish_locks(conn: psycopg.Connection, key: int, lock_timeout_s: float) -> None:
    """Inside a publishing transaction: one publisher at a time (advisory lock `key`), and wait
    at most `lock_timeout_s` for readers' locks on the tables being replaced."""
    conn.execute("select pg_advisory_xact_lock(%s)", (key,))
    conn.execute(
        sql.SQL("set local lock_timeout = {}").format(
            sql.Literal(f"{int(lock_timeout_s * 1000)}ms")
        )
    )


def open_warehouse(settings: Settings) -> ConnectionURL:
    """The warehouse URL, ready for a run: started if embedded, the server's version checked
    (one line names it), the user's privileges checked before anything is written (naming the
    SQL an administrator runs), the database, schemas, roles and grants created. The URL is the
    connecting user's, who may act as every role. Once per process: the run opens it, and a step
    that opens it again gets the URL at once."""
    url = resolve_url(settings)
    if url in _OPENED:
        return url
    conn, exists = connect_server(url)
    with conn:
        server = _server_info(conn)
        source = "embedded Postgres" if settings.uses_embedded_warehouse else "WAREHOUSE_URL"
        log.info("%s", start_line(server, url.masked, source))
        check_supported(server)
        missing = missing_privileges(conn, url.database, database_exists=exists)
        if missing:
            raise WarehouseUnreachable(missing_line(url.user, missing[0]))
        if not exists:
            _create_database(conn, url.database)
    try:
        ensure_roles(url)
    except RolesError as exc:
        raise WarehouseUnreachable(str(exc)) from None
    _OPENED.add(url)
    return url
