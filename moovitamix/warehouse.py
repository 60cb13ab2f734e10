"""The warehouse every step talks to: `WAREHOUSE_URL` when set, else the embedded Postgres.

`open_warehouse()` is the one entry point: it resolves the URL, starts the embedded server if
that is what is in use, makes sure the database and the design's schemas exist, and returns the
connection URL. Errors come out as one line naming host, database and the driver's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql

from moovitamix.connection_url import ConnectionURL, InvalidWarehouseURL
from moovitamix.embedded_warehouse import EmbeddedWarehouse, EmbeddedWarehouseError
from moovitamix.privileges import missing_line, missing_privileges
from moovitamix.roles import SCHEMAS, RolesError, ensure_roles
from moovitamix.server_check import (
    ServerInfo,
    UnsupportedServer,
    check_supported,
    server_info,
    start_line,
)
from moovitamix.settings import DEFAULT_DATABASE, Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
_OPENED: set[ConnectionURL] = set()  # the warehouses this process has prepared


class WarehouseUnreachable(RuntimeError):
    """The warehouse could not be reached or prepared; the message is one line for the user."""


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


@contextmanager
def connect(url: ConnectionURL, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    """A psycopg connection; an unreachable server raises WarehouseUnreachable, one line."""
    try:
        conn = psycopg.connect(url.url(), connect_timeout=CONNECT_TIMEOUT_S, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise WarehouseUnreachable(
            f"cannot reach the warehouse ({url.describe()}): {_reason(exc)}"
        ) from None
    with conn:
        yield conn


def _server_info(conn: psycopg.Connection) -> ServerInfo:
    row = conn.execute("select current_setting('server_version_num')").fetchone()
    return server_info(row[0] if row else None, conn.info.parameter_status("server_version") or "")


def inspect_server(url: ConnectionURL) -> ServerInfo:
    """The server's version, read through the URL's database (or `postgres`, if that one does
    not exist yet): nothing is written."""
    try:
        with connect(url) as conn:
            return _server_info(conn)
    except WarehouseUnreachable as exc:
        if "does not exist" not in str(exc):
            raise
    with connect(url.with_database("postgres")) as conn:
        return _server_info(conn)


def ensure_database(url: ConnectionURL) -> None:
    """Create the database if it is missing (needs CREATEDB on the server's `postgres` db)."""
    try:
        with connect(url):
            return
    except WarehouseUnreachable as exc:
        if "does not exist" not in str(exc):
            raise
    with connect(url.with_database("postgres"), autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(url.database)))
            log.info("created database %s", url.database)
        except psycopg.errors.DuplicateDatabase:
            pass  # another process won the race


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
    server = inspect_server(url)
    source = "embedded Postgres" if settings.uses_embedded_warehouse else "WAREHOUSE_URL"
    log.info("%s", start_line(server, url.masked, source))
    try:
        check_supported(server)
    except UnsupportedServer as exc:
        raise WarehouseUnreachable(str(exc)) from None
    missing = missing_privileges(url)
    if missing:
        raise WarehouseUnreachable(missing_line(url.user, missing[0]))
    ensure_database(url)
    try:
        ensure_roles(url)
    except RolesError as exc:
        raise WarehouseUnreachable(str(exc)) from None
    _OPENED.add(url)
    return url
