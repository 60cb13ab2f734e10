"""`python -m moovitamix warehouse ...`: the commands behind `make psql`, `make print-admin-sql`
and the other warehouse targets."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import psycopg

from moovitamix import exit_codes
from moovitamix.embedded_warehouse import EmbeddedWarehouse, EmbeddedWarehouseError, psql_path
from moovitamix.errors import one_line
from moovitamix.privileges import admin_sql, missing_privileges
from moovitamix.roles import ROLES
from moovitamix.settings import Settings, apply_offline_defaults, load_settings
from moovitamix.warehouse import (
    WarehouseUnreachable,
    connect,
    open_warehouse,
    resolve_url,
)


def _stop(settings: Settings) -> int:
    if not settings.uses_embedded_warehouse:
        print("WAREHOUSE_URL is set: stop applies to the embedded warehouse only")
        return exit_codes.OK
    stopped = EmbeddedWarehouse(settings.embedded_pgdata).stop()
    print("embedded Postgres stopped" if stopped else "embedded Postgres was not running")
    return exit_codes.OK


def _status(settings: Settings) -> int:
    """What is in use and whether it answers; starts nothing."""
    if settings.uses_embedded_warehouse:
        status = EmbeddedWarehouse(settings.embedded_pgdata).status()
        if not status.running:
            print(f"embedded Postgres: not running (data in {settings.embedded_pgdata})")
            return exit_codes.WAREHOUSE_UNREACHABLE
        print(f"embedded Postgres: running, pid {status.pid}, socket {status.socket_dir}")
    else:
        print("WAREHOUSE_URL is set: no embedded warehouse in use")
    url = resolve_url(settings, start=False)
    with connect(url) as conn:
        version = conn.execute("show server_version").fetchone()
    print(f"warehouse: {url.masked} (Postgres {version[0] if version else '?'})")
    return exit_codes.OK


def _warehouse(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.action == "stop":
        return _stop(settings)
    if args.action == "status":
        return _status(settings)
    if args.action == "admin-sql":  # what the user lacks, found without writing anything
        url = resolve_url(settings)
        print(admin_sql(url, missing_privileges(url)), end="")
        return exit_codes.OK
    if args.role and args.action != "psql":
        print("error: --role applies to psql only", file=sys.stderr)
        return exit_codes.USAGE
    url = open_warehouse(settings)
    if args.action == "start":
        print(f"warehouse ready: {url.masked}")
    elif args.action == "url":
        print(url.masked)
    elif args.action == "psql":
        env = {**os.environ, **url.libpq_env()}
        if args.role:  # open_warehouse made the roles and the user a member of each
            # The server runs the session as the role from its start (NOLOGIN roles cannot
            # connect themselves). A view as the role, not a sandbox: RESET ROLE ends it.
            env["PGOPTIONS"] = " ".join(
                filter(None, [env.get("PGOPTIONS"), f"-c role={args.role}"])
            )
        try:
            psql = str(psql_path(tls=url.requires_tls))
        except EmbeddedWarehouseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exit_codes.STEP_FAILED
        os.execve(psql, [psql, *args.psql_args], env)
    return exit_codes.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m moovitamix", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    actions = ["start", "stop", "status", "url", "psql", "admin-sql"]
    wh = sub.add_parser("warehouse", help=f"the warehouse: {', '.join(actions)}")
    wh.add_argument("action", choices=actions)
    wh.add_argument(
        "--role",
        choices=list(ROLES),
        help="psql only, given before it: the session runs as this warehouse role "
        "(e.g. `warehouse --role mvx_analyst psql`)",
    )
    wh.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed on to psql")
    wh.set_defaults(func=_warehouse)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_offline_defaults()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (WarehouseUnreachable, psycopg.OperationalError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return exit_codes.WAREHOUSE_UNREACHABLE
