"""The API simulator as a child process (`python -m simulator`), for a run without an API: the
pipeline speaks HTTP to it and reads its ready line from its log, it never imports it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from moovitamix.settings import PROJECT_ROOT, Settings

READY = re.compile(r"MOOVITAMIX_SIMULATOR_READY url=(\S+)")


class SimulatorError(RuntimeError):
    pass


@contextmanager
def running_simulator(
    args: Sequence[str],
    *,
    log_path: Path,
    timeout_s: float = 180.0,
    meanwhile: Callable[[], object] | None = None,
) -> Iterator[str]:
    """Serve the simulator on a free loopback port for the duration; yield its base URL.
    Its output goes to `log_path`, never to a pipe that could fill. `meanwhile` is called
    once the process is started, before waiting for it to be ready: work that overlaps its
    start-up."""
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
        if meanwhile is not None:
            meanwhile()
        yield _wait_ready(proc, log_path, timeout_s)
    finally:
        _terminate(proc)


@contextmanager
def api_or_simulator(
    settings: Settings,
    run_id: str,
    args: Sequence[str],
    api_url: str | None = None,
    *,
    meanwhile: Callable[[], object] | None = None,
) -> Iterator[tuple[str, Path | None]]:
    """`api_url` (default: settings.api_url), else the simulator started with `args` for the
    duration: yields the URL and the simulator's log (None: no simulator). `meanwhile` is
    called before yielding, while the simulator starts if there is one."""
    if url := api_url or settings.api_url:
        if meanwhile is not None:
            meanwhile()
        yield url, None
        return
    log_path = settings.logs_dir / f"{run_id}.simulator.log"
    with running_simulator(args, log_path=log_path, meanwhile=meanwhile) as url:
        yield url, log_path


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
