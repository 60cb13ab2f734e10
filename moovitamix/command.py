"""The one entry of `python -m <package> COMMAND`: each __main__ declares its commands on
`Commands` and calls `main`, so all share `-v`, the run id, settings, run log, the warehouse
opened once, and the exit codes of `moovitamix.exit_codes` with a one-line failure on stderr."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import psycopg

from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from moovitamix.errors import one_line
from moovitamix.logins import open_logins
from moovitamix.run_context import RUN_ID_ENV, current_run_id, setup_logging
from moovitamix.settings import Settings, apply_offline_defaults, load_settings
from moovitamix.step import RunContext, StepFailed
from moovitamix.warehouse import WarehouseUnreachable, open_warehouse

__all__ = ["Command", "Commands", "UsageError"]
log = logging.getLogger(__name__)


class UsageError(ValueError):
    """Bad arguments or configuration found after parsing: exit 2."""


@dataclass
class Command:
    """What a command's function gets: its arguments, the settings and the run id."""

    args: argparse.Namespace
    settings: Settings
    run_id: str

    @cached_property
    def warehouse(self) -> ConnectionURL:
        """The warehouse, opened on first use (started if embedded, roles set up)."""
        return open_warehouse(self.settings)

    def login(self, role: str) -> ConnectionURL:
        """The warehouse as `role`'s own project login (the warehouse and logins set up first):
        what a step run on its own connects as, as in the daily run."""
        return open_logins(self.settings).url(role)

    def context(self, role: str | None = None) -> RunContext:
        """A step's context when it runs on its own: no publication, the live tables; with
        `role`, it connects as that role's own login."""
        api_url = self.settings.api_url or ""
        warehouse = self.warehouse if role is None else self.login(role)
        return RunContext(self.settings, self.run_id, warehouse, api_url, False)


class Commands:
    """A package's command line: its commands, and the errors that mean usage or failure."""

    def __init__(
        self,
        prog: str,
        description: str | None,
        *,
        usage_errors: tuple[type[Exception], ...] = (),
        step_errors: tuple[type[Exception], ...] = (),
    ) -> None:
        self.parser = argparse.ArgumentParser(
            prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _verbose(self.parser, default=False)
        self._usage = (UsageError, *usage_errors)
        self._failed = (StepFailed, *step_errors)
        self._sub: Any = None  # argparse names no public type for it

    def add(
        self,
        name: str | None,
        handler: Callable[[Command], int | None],
        help: str | None = None,
        *,
        run_log: bool = False,
    ) -> argparse.ArgumentParser:
        """A command (None: the program's only one). `run_log`: it logs to the run's file and
        INFO on the console (a step); else the console shows warnings."""
        if name is None:
            parser = self.parser
        else:
            if self._sub is None:
                self._sub = self.parser.add_subparsers(dest="command", required=True)
            parser = self._sub.add_parser(name, help=help, description=help)
            _verbose(parser, default=argparse.SUPPRESS)  # -v after the command too
        parser.set_defaults(handler=handler, run_log=run_log, command=name)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        args = self.parser.parse_args(argv)
        if getattr(args, "run_id", None):  # a command's --run-id wins over the environment's
            os.environ[RUN_ID_ENV] = args.run_id
        apply_offline_defaults()
        settings = load_settings()
        command = Command(args, settings, current_run_id())
        if args.run_log:
            days = settings.log_retention_days
            log_file = setup_logging(
                command.run_id, settings.logs_dir, verbose=args.verbose, retention_days=days
            )
            log.info("run %s, log %s", command.run_id, log_file)
        else:
            level = logging.DEBUG if args.verbose else logging.WARNING
            logging.basicConfig(level=level, format="%(levelname)s %(message)s")
        try:
            code = args.handler(command)
        except self._failed as exc:
            code = getattr(exc, "code", exit_codes.STEP_FAILED)  # StepFailed's own
            line = f"FAILED step '{args.command or self.parser.prog}': {one_line(exc)}"
        except self._usage as exc:
            line, code = f"error: {one_line(exc)}", exit_codes.USAGE
        except (WarehouseUnreachable, psycopg.OperationalError) as exc:
            line, code = f"error: {one_line(exc)}", exit_codes.WAREHOUSE_UNREACHABLE
        else:
            return exit_codes.OK if code is None else code
        print(line, file=sys.stderr, flush=True)
        return code


def _verbose(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug output on console"
    )
