"""Run ids (`20261126T153012Z-3f9a1c`: unique, sorting by time), carried through every step, and
run logs: INFO on the console, DEBUG as JSON lines in `logs/<run_id>.jsonl` (a cron run leaves a
file to read), deleted after MOOVITAMIX_LOG_RETENTION_DAYS when a run starts."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

RUN_ID_ENV = "MOOVITAMIX_RUN_ID"
_CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
LOG_SUFFIXES = (".jsonl", ".log")  # run logs, and the simulators' logs beside them


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, pid, run id, message, traceback."""

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "run_id": self.run_id,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def prune_logs(logs_dir: Path, retention_days: float, now: float | None = None) -> list[Path]:
    """Delete run logs older than `retention_days` (0 or less: keep everything)."""
    if retention_days <= 0:
        return []
    cutoff = (now or time.time()) - retention_days * 86400
    removed = []
    for path in logs_dir.iterdir():
        if path.suffix in LOG_SUFFIXES and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def current_run_id() -> str:
    """The run id of this process: inherited from the parent run, or new (and exported)."""
    run_id = os.environ.get(RUN_ID_ENV) or new_run_id()
    os.environ[RUN_ID_ENV] = run_id
    return run_id


def setup_logging(
    run_id: str, logs_dir: Path, *, retention_days: float, verbose: bool = False
) -> Path:
    """Console at INFO (DEBUG if verbose), and the run's JSON-lines file at DEBUG; prunes old
    run logs. Returns the file."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    prune_logs(logs_dir, retention_days)
    log_file = logs_dir / f"{run_id}.jsonl"
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if handler.name == "moovitamix":  # a previous setup's, in the same process
            root.removeHandler(handler)

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter(_CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    file = logging.FileHandler(log_file, encoding="utf-8")
    file.setLevel(logging.DEBUG)
    file.setFormatter(JsonLinesFormatter(run_id))
    for handler in (console, file):
        handler.name = "moovitamix"
        root.addHandler(handler)
    # Third-party chatter stays in the file.
    for noisy in ("httpx", "httpcore", "urllib3", "dlt", "great_expectations", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file
