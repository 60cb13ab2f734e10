"""`python -m serving [--host 127.0.0.1] [--port 8081] [--workers N]`: the API under uvicorn
(several workers: serving.workers)."""

from __future__ import annotations

import os

import uvicorn

from moovitamix.command import Command, Commands, UsageError
from serving.workers import APP, run_workers


def serve(command: Command) -> int | None:
    args = command.args
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    command.warehouse  # noqa: B018  (unreachable: one line and exit 3 before uvicorn starts)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # for the workers, before numpy loads
    log_level = "info" if args.verbose else "warning"
    if args.workers == 1:
        uvicorn.run(APP, factory=True, host=args.host, port=args.port, log_level=log_level)
        return None
    return run_workers(args.host, args.port, args.workers, log_level)


def main(argv: list[str] | None = None) -> int:
    commands = Commands("python -m serving", __doc__.splitlines()[0])
    parser = commands.add(None, serve)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (8081)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn processes (1)")
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
