"""`python -m simulator`: generate the data, bind the socket, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from simulator import faults
from simulator.app import create_app
from simulator.follow import Following
from simulator.generate import PROFILES, WorldSpec
from simulator.responses import silence_intentional_drops
from simulator.state import Simulator

READY_PREFIX = "MOOVITAMIX_SIMULATOR_READY"

EPILOG = f"""\
Faults (all off by default):
{faults.FAULT_SPEC_HELP}
Examples:
  python -m simulator --port 0 --users 100000 --tracks 20000 --day 3
  python -m simulator --fault 'tracks:http_5xx=0.1,http_429=0.05' --fault '*:latency=0.2'
  python -m simulator --faults-json '{{"users": {{"bad_records": 0.01}}}}'

Admin endpoint (not in /openapi.json):
  GET  /_admin/state   current seed, profile, sizes, day, totals, faults
  POST /_admin/state   JSON {{"day": N, "faults": {{...}} or ["spec", ...], "reset_attempts": true}}
                       (any subset; "faults" replaces every fault, {{}} turns them off)

Once serving, one line goes to stdout: {READY_PREFIX} url=http://HOST:PORT
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="The MooVitamix API simulator: /tracks, /users, /listen_history over HTTP.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=1, help="same seed, same data (default 1)")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="realistic",
        help="realistic (default) or reference (the reference server's quirks)",
    )
    parser.add_argument("--users", type=int, default=1000, help="users on day 0 (default 1000)")
    parser.add_argument("--tracks", type=int, default=1000, help="tracks on day 0 (default 1000)")
    parser.add_argument("--day", type=int, default=0, help="serve day N's data (default 0)")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="ENDPOINT:KEY=VALUE[,KEY=VALUE...], repeatable (see below)",
    )
    parser.add_argument(
        "--faults-json",
        metavar="JSON|@FILE",
        help='faults as JSON {"ENDPOINT": {"KEY": VALUE}}, inline or @file',
    )
    parser.add_argument(
        "--follow-lists",
        type=Path,
        metavar="FILE",
        help='JSON {"DAY": {"USER_ID": [TRACK_ID, ...]}}: on each day, users follow their list '
        "with probability --follow-p (read whenever a day is built; off by default)",
    )
    parser.add_argument(
        "--follow-p",
        type=float,
        default=0.5,
        help="probability that a user with a list plays from it that day (default 0.5)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
    )
    args = parser.parse_args(argv)
    if args.day < 0:
        parser.error("--day must be >= 0")
    if args.users < 1 or args.tracks < 1:
        parser.error("--users and --tracks must be >= 1")
    if not 0 <= args.follow_p <= 1:
        parser.error("--follow-p must be between 0 and 1")
    try:
        args.fault_config = fault_config(args.fault, args.faults_json)
    except (faults.FaultSpecError, json.JSONDecodeError, OSError) as exc:
        parser.error(f"faults: {exc}")
    return args


def fault_config(specs: Sequence[str], faults_json: str | None) -> faults.FaultConfig:
    config = faults.FaultConfig()
    if faults_json:
        text = Path(faults_json[1:]).read_text() if faults_json.startswith("@") else faults_json
        config = faults.FaultConfig.from_mapping(json.loads(text))
    if specs:
        config = config.merged_with(faults.FaultConfig.from_specs(list(specs)))
    return config


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A bound socket (uvicorn listens on it) and the base URL it serves."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only disables Nagle (TCP_NODELAY) on sockets that say so,
    # and without it every response waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{shown}:{bound_port}"


class ReadyServer(uvicorn.Server):
    """uvicorn, announcing readiness on stdout and exiting 0 on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, url: str) -> None:
        super().__init__(config)
        self.url = url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(f"{READY_PREFIX} url={self.url}", flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal after shutting down; a clean stop should exit 0 instead
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the access log on stderr: stdout only carries the ready line."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    spec = WorldSpec(seed=args.seed, profile=args.profile, users=args.users, tracks=args.tracks)
    try:
        sock, url = bind(args.host, args.port)
    except OSError as exc:
        print(f"simulator: cannot bind {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    following = Following(args.follow_lists, args.follow_p) if args.follow_lists else None
    simulator = Simulator(spec, day=args.day, fault_config=args.fault_config, following=following)
    config = uvicorn.Config(
        create_app(simulator),
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=1,
        lifespan="off",
        log_config=_log_config(),
    )
    silence_intentional_drops()
    if args.access_log:  # uvicorn logs requests at INFO, below the default level
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    server = ReadyServer(config, url)
    with sock:
        server.run(sockets=[sock])
    return 0
