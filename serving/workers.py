"""Several uvicorn processes serving one port.

Each worker has its own listening socket on the port (SO_REUSEPORT: the kernel spreads the
connections); all stop on SIGTERM or Ctrl-C. uvicorn's own `workers=` is not used: its shared
socket loses TCP_NODELAY, and every keep-alive response then waits ~40 ms for a delayed ACK
(https://github.com/Kludex/uvicorn/issues/3149).
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
from multiprocessing.connection import wait

import uvicorn

APP = "serving.app:app_from_env"


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port that other processes may bind too (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run_worker(host: str, port: int, log_level: str) -> None:
    """One uvicorn process on its own socket (uvicorn.Server.run listens on it)."""
    config = uvicorn.Config(APP, factory=True, log_level=log_level)
    uvicorn.Server(config).run(sockets=[listening_socket(host, port)])


def run_workers(host: str, port: int, workers: int, log_level: str) -> int:
    """`workers` processes on host:port until one ends or this one is stopped; the first
    ended worker's exit code."""
    reserved = listening_socket(host, port)  # port taken: fails here; port 0: one for all
    port = reserved.getsockname()[1]
    spawn = multiprocessing.get_context("spawn")
    processes = [
        spawn.Process(target=run_worker, args=(host, port, log_level), name=f"serving-{i}")
        for i in range(workers)
    ]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    for process in processes:
        process.start()
    try:
        wait([process.sentinel for process in processes])
        return next(p.exitcode or 0 for p in processes if p.exitcode is not None)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.join()
        reserved.close()
