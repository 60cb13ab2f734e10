"""Start the API simulator as a separate program and wait until it serves.

The pipeline only speaks HTTP to the simulator: it runs `python -m simulator` in a child
process and reads its ready line from the child's log, it never imports it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from moovitamix.settings import PROJECT_ROOT

READY = re.compile(r"MOOVITAMIX_SIMULATOR_READY url=(\S+)")


class SimulatorError(RuntimeError):
    pass


@contextmanager
def running_simulator(
    args: Sequence[str], *, log_path: Path, timeout_s: float = 180.0
) -> Iterator[str]:
    """Serve the simulator on a free loopback port for the duration; yield its base URL.
    Its output goes to `log_path`, never to a pipe that could fill."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", "0", *args]
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield _wait_ready(proc, log_path, timeout_s)
    finally:
        _terminate(proc)


def _wait_ready(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        match = READY.search(text)
        if match:
            return match.group(1)
        if proc.poll() is not None:
            lines = text.strip().splitlines() or ["no output"]
            raise SimulatorError(
                f"the simulator exited with code {proc.returncode}: {lines[-1]} (log: {log_path})"
            )
        time.sleep(0.1)
    raise SimulatorError(f"the simulator did not start within {timeout_s:.0f}s (log: {log_path})")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
