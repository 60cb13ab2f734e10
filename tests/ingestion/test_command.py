"""`python -m ingestion` as `make ingest` and cron run it: exit codes and the one line."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import dlt
import psycopg

from ingestion.raw_tables import LOCK_KEY
from moovitamix import exit_codes
from moovitamix.connection_url import ConnectionURL
from tests.ingestion.ingestion_helpers import Ingest, Raw, admin, assert_raw_matches_api, run_cli


def cli_env(**changes: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MOOVITAMIX_API_URL", "MOOVITAMIX_RUN_ID")
    }
    env.update(changes)
    return env


def test_an_endpoint_that_always_fails_changes_nothing_in_raw(
    start_simulator: Callable[..., str], ingest: Ingest, raw: Raw
) -> None:
    url = start_simulator("--seed", "5", "--users", "200", "--tracks", "150")
    ingest(url)
    before = raw.snapshot()
    # the next day's data is there, tracks and users read fine: still nothing may reach raw
    admin(url, day=1, faults={"listen_history": {"always_fail": True}})

    done = run_cli(
        "--api-url", url, "--max-attempts", "3", "--backoff", "0.01", "--no-progress",
        env=cli_env(MOOVITAMIX_RUN_ID="run-always-fails"),
    )  # fmt: skip

    assert done.returncode == exit_codes.STEP_FAILED, done.stderr
    last = done.stderr.strip().splitlines()[-1]  # the one line, last
    assert last.startswith(
        "FAILED step 'python -m ingestion': listen_history page 1: HTTP 500 Internal Server Error "
    )
    assert "(3 attempts)" in last
    assert raw.snapshot() == before
    stats = raw.stats("run-always-fails")
    assert {e: s["status"] for e, s in stats.items()} == {
        "tracks": "discarded",
        "users": "discarded",
        "listen_history": "failed",
    }
    assert stats["listen_history"]["http_errors"] == {"500": 3}
    assert all(s["load_id"] is None for s in stats.values())
    # nothing of the failed run is pending in dlt's pipeline
    working_dir = next(Path(os.environ["MOOVITAMIX_DATA_DIR"]).glob("dlt/*/moovitamix"))
    pipeline = dlt.attach("moovitamix", pipelines_dir=str(working_dir.parent))
    assert not pipeline.has_pending_data and not pipeline.list_extracted_load_packages()

    # the next run loads its own package only
    admin(url, faults={})
    ingest(url)
    assert not pipeline.has_pending_data
    assert raw.value("select count(*) from raw._dlt_loads") == 2
    assert_raw_matches_api(raw, url)  # day 1 as served, nothing twice


def test_a_warehouse_that_is_down_gives_one_clear_line(simulator_url: str) -> None:
    done = run_cli(
        "--api-url", simulator_url, "--no-progress",
        env=cli_env(WAREHOUSE_URL="postgresql://mvx:secret@127.0.0.1:1/moovitamix"),
        timeout=60,
    )  # fmt: skip
    assert done.returncode == exit_codes.WAREHOUSE_UNREACHABLE
    *info, line = done.stderr.strip().splitlines()
    assert line == (
        "error: cannot reach the warehouse (host 127.0.0.1:1, database moovitamix, "
        "user mvx): Connection refused" + line.split("Connection refused", 1)[1]
    )
    assert all(" INFO " in i for i in info)  # the run's id and log, as every step command
    assert "secret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_without_an_api_url_the_simulator_is_started(warehouse_env: ConnectionURL) -> None:
    done = run_cli("--simulator-args", "--users 40 --tracks 30", "--no-progress", env=cli_env())
    assert done.returncode == exit_codes.OK, done.stderr
    run_line, first = done.stderr.strip().splitlines()[:2]  # after the run's id and log
    assert " INFO    run " in run_line
    assert "MOOVITAMIX_API_URL is unset: started the built-in simulator at http://" in first
    run_id, run_log = re.search(r" run (\S+), log (\S+)", run_line).groups()
    assert (Path(run_log).parent / f"{run_id}.simulator.log").is_file()
    assert "listen_history" in done.stdout and "ok: 110 records" in done.stdout
    assert Raw(warehouse_env).value("select count(*) from raw.users") == 40


def test_a_second_ingestion_on_the_warehouse_exits_75(
    simulator_url: str, warehouse_env: ConnectionURL
) -> None:
    with psycopg.connect(warehouse_env.url(), autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        done = run_cli("--api-url", simulator_url, "--no-progress", env=cli_env())
    assert done.returncode == exit_codes.ALREADY_RUNNING, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "FAILED step 'python -m ingestion': another ingestion run holds the lock on this warehouse"
    )
