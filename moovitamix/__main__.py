"""`python -m moovitamix warehouse ...`: the commands behind `make psql`, `make print-admin-sql`
and the other warehouse targets."""

from __future__ import annotations

import os

from moovitamix import exit_codes
from moovitamix.command import Command, Commands, UsageError
from moovitamix.embedded_warehouse import EmbeddedWarehouse, EmbeddedWarehouseError, psql_path
from moovitamix.privileges import admin_sql, missing_privileges
from moovitamix.roles import ROLES
from moovitamix.settings import Settings
from moovitamix.warehouse import connect, connect_server, resolve_url


def _stop(settings: Settings) -> None:
    if not settings.uses_embedded_warehouse:
        print("WAREHOUSE_URL is set: stop applies to the embedded warehouse only")
    elif EmbeddedWarehouse(settings.embedded_pgdata).stop():
        print("embedded Postgres stopped")
    else:
        print("embedded Postgres was not running")


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


def _warehouse(cmd: Command) -> int | None:
    args, settings = cmd.args, cmd.settings
    if args.action in ("stop", "status"):
        return (_stop if args.action == "stop" else _status)(settings)
    if args.action == "admin-sql":  # what the user lacks, found without writing anything
        url = resolve_url(settings)
        conn, exists = connect_server(url)
        with conn:
            missing = missing_privileges(conn, url.database, database_exists=exists)
        print(admin_sql(url, missing), end="")
        return None
    if args.role and args.action != "psql":
        raise UsageError("--role applies to psql only")
    url = cmd.warehouse
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
        psql = str(psql_path(tls=url.requires_tls))  # EmbeddedWarehouseError: a failed step
        os.execve(psql, [psql, *args.psql_args], env)
    return None


def main(argv: list[str] | None = None) -> int:
    commands = Commands("python -m moovitamix", __doc__, step_errors=(EmbeddedWarehouseError,))
    actions = ["start", "stop", "status", "url", "psql", "admin-sql"]
    wh = commands.add("warehouse", _warehouse, f"the warehouse: {', '.join(actions)}")
    wh.add_argument("action", choices=actions)
    wh.add_argument(
        "--role",
        choices=list(ROLES),
        help="psql only, given before it: the session runs as this warehouse role "
        "(e.g. `warehouse --role mvx_analyst psql`)",
    )
    wh.add_argument("psql_args", nargs="...", help="passed on to psql")
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
