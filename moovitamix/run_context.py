"""Run ids and run logs: one id per daily run, carried through every step.

A run id sorts by time and is unique: `20261126T153012Z-3f9a1c`. Every step logs to the console
(human-readable) and to `logs/<run_id>.log` (full detail), so a cron run leaves a file to read.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

RUN_ID_ENV = "MOOVITAMIX_RUN_ID"
_CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(process)d] %(message)s"


def new_run_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def current_run_id() -> str:
    """The run id of this process: inherited from the parent run, or new (and exported)."""
    run_id = os.environ.get(RUN_ID_ENV) or new_run_id()
    os.environ[RUN_ID_ENV] = run_id
    return run_id


def setup_logging(run_id: str, logs_dir: Path, *, verbose: bool = False) -> Path:
    """Console at INFO (DEBUG if verbose), and the run's log file at DEBUG. Returns the file."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    log_file = logs_dir / f"{run_id}.log"
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_moovitamix", False):
            root.removeHandler(handler)

    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter(_CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    file = logging.FileHandler(log_file, encoding="utf-8")
    file.setLevel(logging.DEBUG)
    file.setFormatter(logging.Formatter(_FILE_FORMAT))
    for handler in (console, file):
        handler._moovitamix = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # Third-party chatter stays in the file.
    for noisy in ("httpx", "httpcore", "urllib3", "dlt", "great_expectations", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return log_file
