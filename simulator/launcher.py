"""Run the simulator as a child process (for tests and benchmarks, which talk to it over HTTP).

with running(["--seed", "3"]) as sim:
    httpx.get(f"{sim.url}/users")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from simulator.cli import READY_PREFIX

REPO_ROOT = Path(__file__).resolve().parent.parent


class SimulatorProcess:
    """`python -m simulator --port 0 ARGS` in a child process; `url` once it is ready."""

    def __init__(self, args: Sequence[str] = (), *, host: str = "127.0.0.1") -> None:
        self.argv = [sys.executable, "-m", "simulator", "--host", host, "--port", "0", *args]
        self.started_at = time.perf_counter()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            text=True,
        )
        self._final_stderr = ""
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready_after_s: float | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # keeps draining after the ready line
            self.lines.append(line.rstrip("\n"))
            if self.url is None and line.startswith(READY_PREFIX + " url="):
                self.url = line.split("url=", 1)[1].strip()
                self.ready_after_s = time.perf_counter() - self.started_at
                self._ready.set()
        self._ready.set()

    def stderr_text(self) -> str:
        """What the process wrote to stderr (so far, or in all once stopped)."""
        if self._stderr.closed:
            return self._final_stderr
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        if not self._ready.wait(timeout_s) or self.url is None:
            code = self.proc.poll()
            errors = self.stderr_text()[-2000:]
            self.stop()
            raise RuntimeError(f"simulator not ready (exit code {code}): {errors}")
        return self.url

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        """Signal the process, wait for it, return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        if not self._stderr.closed:
            self._final_stderr = self.stderr_text()
            self._stderr.close()
        return self.proc.returncode


@contextmanager
def running(args: Sequence[str] = (), *, timeout_s: float = 120.0) -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(args)
    try:
        sim.wait_ready(timeout_s)
        yield sim
    finally:
        sim.stop()
