"""`python -m serving [--host 127.0.0.1] [--port 8081] [--workers N]`: the API under uvicorn."""

from __future__ import annotations

import os

import uvicorn

from moovitamix.command import Command, Commands


def serve(command: Command) -> None:
    args = command.args
    command.warehouse  # noqa: B018  (unreachable: one line and exit 3 before uvicorn starts)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # for the workers, before numpy loads
    uvicorn.run(
        "serving.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info" if args.verbose else "warning",
    )


def main(argv: list[str] | None = None) -> int:
    commands = Commands("python -m serving", __doc__)
    parser = commands.add(None, serve)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (8081)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (1)")
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
