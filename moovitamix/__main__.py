"""`python -m moovitamix warehouse ...` and `login ...`: the commands behind `make psql`,
`make analyst-psql`, `make print-admin-sql`, the logins' targets (`make add-login`, `make logins`,
`make rotate-credentials`, ...) and the other warehouse targets."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from moovitamix import exit_codes, logins
from moovitamix.command import Command, Commands, UsageError
from moovitamix.credentials import CredentialsError
from moovitamix.embedded_warehouse import EmbeddedWarehouse, EmbeddedWarehouseError, psql_path
from moovitamix.privileges import admin_sql, missing_privileges
from moovitamix.roles import ROLES
from moovitamix.run_lock import RunLocked, run_lock
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
    if (args.role or args.login) and args.action != "psql":
        raise UsageError("--role and --login apply to psql only")
    if args.role and args.login:
        raise UsageError("give --role or --login, not both")
    url = cmd.warehouse
    if args.action == "start":
        print(f"warehouse ready: {url.masked}")
    elif args.action == "url":
        print(url.masked)
    elif args.action == "psql":
        env = dict(os.environ)
        if args.role:  # the role's own project login: RESET ROLE returns to it, no further
            if args.role not in logins.PROJECT_LOGINS:
                raise UsageError(
                    f"{args.role} has no project login: connect as a person's login "
                    "(`make add-login`, then `warehouse --login NAME psql`)"
                )
            url = logins.open_logins(settings).url(args.role)
        elif args.login:  # a person's login: psql asks for its password (or their PGPASSFILE)
            url = replace(url, user=args.login, password="")
            env.pop("PGPASSWORD", None)
        # the password reaches psql in its environment only, never its command line
        env |= url.libpq_env()
        psql = str(psql_path(tls=url.requires_tls))  # EmbeddedWarehouseError: a failed step
        os.execve(psql, [psql, *args.psql_args], env)
    return None


def _rotate(cmd: Command) -> None:
    """New passwords for the project logins, once no daily run holds the run lock (a run keeps
    the passwords it read at its start): it waits up to --wait seconds for one to finish."""
    settings = cmd.settings
    admin = cmd.warehouse
    for attempt in Retrying(
        stop=stop_after_delay(cmd.args.wait),
        wait=wait_fixed(2),
        retry=retry_if_exception_type(RunLocked),
        reraise=True,
    ):
        with attempt, run_lock(settings.data_dir / "daily.lock", f"rotate-{cmd.run_id}"):
            rotated = logins.rotate_project_logins(
                admin, logins.credentials_file(settings), settings.login_passwords
            )
    print(f"new passwords for {', '.join(rotated)} in {logins.credentials_file(settings).path}")
    print("sessions open already keep theirs; restart a running serving API (make serve)")


def _login(cmd: Command) -> int | None:
    args = cmd.args
    if args.action == "rotate":
        _rotate(cmd)
        return None
    if args.action == "list":
        rows = logins.list_logins(cmd.warehouse)
        width = max([len(r.name) for r in rows] + [5])
        print(f"{'login':<{width}}  {'kind':<7}  password  roles")
        for row in rows:
            password = "yes" if row.password else "-"
            print(f"{row.name:<{width}}  {row.kind:<7}  {password:<8}  {', '.join(row.roles)}")
        return None
    if not args.name:
        raise UsageError(f"login {args.action} needs --name")
    if args.action == "remove":
        logins.remove_person_login(cmd.warehouse, args.name)
        print(f"removed login {args.name}")
        return None
    if not args.role:
        raise UsageError(f"login add needs --role ({', '.join(logins.PERSON_ROLES)})")
    if args.password_stdin and args.no_password:
        raise UsageError("give --password-stdin or --no-password, not both")
    password: str | None = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise UsageError("--password-stdin: no password on standard input")
    elif not args.no_password:
        password = logins.new_password()
    logins.add_person_login(cmd.warehouse, args.name, args.role, password)
    print(f"created login {args.name} ({args.role})")
    if password is not None and not args.password_stdin:  # shown this once, never logged
        print(f"its password, shown once: {password}")
    elif args.no_password:
        print("no password: map a client certificate to it in the server's pg_hba.conf (cert)")
    return None


def main(argv: list[str] | None = None) -> int:
    commands = Commands(
        "python -m moovitamix",
        __doc__,
        usage_errors=(logins.LoginError,),
        step_errors=(EmbeddedWarehouseError, CredentialsError, RunLocked),
    )
    actions = ["start", "stop", "status", "url", "psql", "admin-sql"]
    wh = commands.add("warehouse", _warehouse, f"the warehouse: {', '.join(actions)}")
    wh.add_argument("action", choices=actions)
    wh.add_argument(
        "--role",
        choices=list(ROLES),
        help="psql only, given before it: the session runs as this warehouse role "
        "(e.g. `warehouse --role mvx_analyst psql`)",
    )
    wh.add_argument(
        "--login", help="psql only: connect as this person's login (psql asks its password)"
    )
    wh.add_argument("psql_args", nargs="...", help="passed on to psql")
    login = commands.add("login", _login, "the warehouse's logins: add, remove, list, rotate")
    login.add_argument("action", choices=["add", "remove", "list", "rotate"])
    login.add_argument("--name", help="add, remove: the person's login name")
    login.add_argument("--role", choices=list(logins.PERSON_ROLES), help="add: its role")
    login.add_argument(
        "--password-stdin", action="store_true", help="add: read its password from stdin"
    )
    login.add_argument(
        "--no-password", action="store_true", help="add: none (a client certificate logs in)"
    )
    login.add_argument(
        "--wait", type=float, default=3600.0, help="rotate: seconds to wait for a running run"
    )
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
