"""`python -m privacy forget|process|report`: ask for a user's erasure and run it at once
(`make forget-user ARGS="--user-id 123 --reason ticket-987"`), run every pending request, print
the audit (`make erasure-report`)."""

from __future__ import annotations

from collections.abc import Sequence

from moovitamix.command import Command, Commands, UsageError
from moovitamix.roles import PRIVACY
from moovitamix.warehouse import connect
from privacy import ErasureFailed
from privacy.erasure import Erased


def _print(done: list[Erased]) -> None:
    for erased in done:
        print(f"erasure request {erased.request_id}: done, {erased.total:,} rows removed")


def _forget(cmd: Command) -> None:
    from privacy.erasure import process_requests, request_erasure

    if cmd.args.user_id < 0:
        raise UsageError("--user-id must be a user's id (a positive integer)")
    privacy = cmd.login(PRIVACY)  # its own login, as in the daily run's `erase` step
    with connect(privacy, autocommit=True) as conn:
        request_id = request_erasure(conn, cmd.args.user_id, cmd.args.reason)
    print(f"erasure request {request_id} recorded")
    _print(process_requests(privacy, cmd.settings, only=request_id))


def _process(cmd: Command) -> None:
    from privacy.erasure import process_requests

    done = process_requests(cmd.login(PRIVACY), cmd.settings)
    _print(done)
    if not done:
        print("no pending erasure requests")


def _report(cmd: Command) -> None:
    from privacy.report import erasure_report

    with connect(cmd.login(PRIVACY), autocommit=True) as conn:
        print(erasure_report(conn))


def main(argv: Sequence[str] | None = None) -> int:
    commands = Commands(
        "python -m privacy",
        "Forget a user: erasure requests, their processing and their audit.",
        step_errors=(ErasureFailed,),
    )
    forget = commands.add("forget", _forget, "request a user's erasure and run it", run_log=True)
    forget.add_argument("--user-id", type=int, required=True, help="the user's id in the API")
    forget.add_argument("--reason", default="", help="e.g. the ticket of the request")
    commands.add("process", _process, "run every pending erasure request", run_log=True)
    commands.add("report", _report, "print the erasure audit")
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
