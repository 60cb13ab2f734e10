"""The warehouse every step talks to: `WAREHOUSE_URL` when set, else the embedded Postgres.
`open_warehouse()` is the one entry point (README "The embedded warehouse" and "Your own
Postgres"); its errors are one line naming host, database and the reason."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL, InvalidWarehouseURL
from moovitamix.embedded_warehouse import EmbeddedWarehouse, EmbeddedWarehouseError
from moovitamix.privileges import missing_line, missing_privileges
from moovitamix.roles import RolesError, ensure_roles
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


def check_server(version_num: int, version: str, where: str) -> None:
    """Log 'warehouse: PostgreSQL 15.18 at <where>' from psycopg's `server_version` (150018)
    and the server's own text ("15.18 (Debian ...)"), then refuse a server below 14 or whose
    version cannot be read; a newer major than tested only warns."""
    if version_num <= 0:
        raise UnsupportedServer(
            f"cannot read the server's version (server_version_num {version_num!r}): the "
            f"warehouse must be {SUPPORTED}"
        )
    name = f"PostgreSQL {version.split()[0]}" if version.strip() else "PostgreSQL"
    log.info("warehouse: %s at %s", name, where)
    if version_num < MIN_VERSION_NUM:
        raise UnsupportedServer(
            f"the warehouse server is {name}, which MooVitamix does not support: it needs "
            f"{SUPPORTED} (upgrade the server, or point WAREHOUSE_URL at a supported one)"
        )
    if version_num // 10000 > NEWEST_TESTED_MAJOR:
        log.warning("%s is newer than the releases tested (%s)", name, SUPPORTED)


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
    try:
        admin = server.start() if start else server.url()
    except EmbeddedWarehouseError as exc:
        raise WarehouseUnreachable(
            f"cannot start the embedded Postgres in {settings.embedded_pgdata}: {exc}"
        ) from None
    if admin is None:
        raise WarehouseUnreachable(
            f"the embedded Postgres in {settings.embedded_pgdata} is not running"
        )
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


def _create_database(conn: psycopg.Connection, database: str) -> None:
    try:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(database)))
        log.info("created database %s", database)
    except psycopg.errors.DuplicateDatabase:
        pass  # another process won the race


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


SETUP_APPLICATION = "moovitamix set-up"  # what pg_stat_activity shows of the bootstrap user


def setup_url(url: ConnectionURL) -> ConnectionURL:
    """The bootstrap URL, its sessions named as the set-up's in pg_stat_activity: the only
    sessions of a run that log in as the warehouse user."""
    options = dict(url.options) | {"application_name": SETUP_APPLICATION}
    return replace(url, options=tuple(options.items()))


def open_warehouse(settings: Settings) -> ConnectionURL:
    """The connecting user's URL (who may act as every role), once per process: started if
    embedded, server and privileges checked before anything is written, then the database,
    schemas, roles and grants created; opened again, it is returned at once."""
    url = resolve_url(settings)
    if url in _OPENED:
        return url
    conn, exists = connect_server(setup_url(url))
    with conn:
        source = "embedded Postgres" if settings.uses_embedded_warehouse else "WAREHOUSE_URL"
        version = conn.info.parameter_status("server_version") or ""
        check_server(conn.info.server_version, version, f"{url.masked} ({source})")
        missing = missing_privileges(conn, url.database, database_exists=exists)
        if missing:
            raise WarehouseUnreachable(missing_line(url.user, missing[0]))
        if not exists:
            _create_database(conn, url.database)
    try:
        ensure_roles(setup_url(url))
    except RolesError as exc:
        raise WarehouseUnreachable(str(exc)) from None
    _OPENED.add(url)
    return url
