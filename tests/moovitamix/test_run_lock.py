import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from moovitamix.run_lock import RunLocked, run_lock
from moovitamix.settings import PROJECT_ROOT


def test_second_holder_is_refused_at_once_with_who_holds_it(tmp_path: Path) -> None:
    lock = tmp_path / "daily.lock"
    with run_lock(lock, "run-a") as stale:
        assert stale is None
        holder = subprocess.run(
            [
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                from pathlib import Path
                from moovitamix.run_lock import RunLocked, run_lock
                try:
                    with run_lock(Path({str(lock)!r}), "run-b"):
                        print("acquired")
                except RunLocked as exc:
                    print(exc)
            """),
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "another run is in progress (run run-a" in holder
    with run_lock(lock, "run-c") as stale:
        assert stale is None, "a released lock is not stale"


def test_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "daily.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import time
            from pathlib import Path
            from moovitamix.run_lock import run_lock
            with run_lock(Path({str(lock)!r}), "run-killed"):
                print("held", flush=True)
                time.sleep(600)
        """),
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLocked), run_lock(lock, "run-early"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with run_lock(lock, "run-next") as stale:
        assert stale is not None and stale["run_id"] == "run-killed"
    assert json.loads(lock.read_text())["released"] is True
