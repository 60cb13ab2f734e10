"""One daily run at a time: a `flock` on a file in the data directory, which the kernel drops when
its holder dies (even on kill -9); the file names the holder: the next run says it took over."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO


class RunLocked(RuntimeError):
    """Another run holds the lock; the message says which."""


def _read_holder(handle: IO[str]) -> dict[str, object]:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except json.JSONDecodeError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _write_holder(handle: IO[str], run_id: str, **state: object) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"run_id": run_id, "pid": os.getpid(), **state}))
    handle.flush()


@contextmanager
def run_lock(path: Path, run_id: str) -> Iterator[dict[str, object] | None]:
    """Hold the lock for the block. Yields the previous holder if it died holding the lock
    (its run never released it), else None. Raises RunLocked at once if a live run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(handle)
            raise RunLocked(
                f"another run is in progress (run {holder.get('run_id', '?')}, "
                f"pid {holder.get('pid', '?')}, since {holder.get('since', '?')}); "
                f"lock file {path}"
            ) from None
        previous = _read_holder(handle)
        stale = previous if previous.get("released") is False else None
        since = datetime.now(UTC).isoformat(timespec="seconds")
        _write_holder(handle, run_id, released=False, since=since)
        try:
            yield stale
        finally:
            _write_holder(handle, run_id, released=True)
            fcntl.flock(handle, fcntl.LOCK_UN)
