"""Run logs: one JSON object per line in logs/<run_id>.jsonl, old logs pruned."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moovitamix.run_context import prune_logs, setup_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_run_log_is_json_lines_with_the_run_id(tmp_path: Path) -> None:
    log_file = setup_logging("20261126T000000Z-abcdef", tmp_path, retention_days=0)
    log = logging.getLogger("moovitamix.test")
    log.info("rows: %d", 42)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    for handler in logging.getLogger().handlers:
        handler.flush()
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert log_file.name == "20261126T000000Z-abcdef.jsonl"
    info = next(e for e in entries if e["msg"] == "rows: 42")
    assert info["level"] == "INFO" and info["logger"] == "moovitamix.test"
    assert info["run_id"] == "20261126T000000Z-abcdef" and info["ts"].endswith("+00:00")
    error = next(e for e in entries if e["msg"] == "it failed")
    assert "ValueError: boom" in error["exc"]


def test_logs_older_than_the_retention_are_deleted(tmp_path: Path) -> None:
    now = time.time()  # clock: the files' mtimes are set relative to it, then passed as `now`
    old, recent, other = tmp_path / "old.jsonl", tmp_path / "recent.jsonl", tmp_path / "keep.txt"
    for path in (old, recent, other):
        path.write_text("{}\n")
    os.utime(old, (now - 40 * 86400, now - 40 * 86400))
    os.utime(other, (now - 40 * 86400, now - 40 * 86400))
    assert prune_logs(tmp_path, 30, now=now) == [old]
    assert recent.exists() and other.exists()
    assert prune_logs(tmp_path, 0, now=now) == []  # 0 keeps everything
