"""`python -m ingestion` (make ingest): load the MooVitamix API into schema raw, or into
`--destination filesystem [--bucket-url URL]` (a snapshot appended to the Parquet lake) or
`--destination duckdb`. Without MOOVITAMIX_API_URL (or --api-url) the built-in simulator is
started, and the first line says so. Exit codes: moovitamix.command; 75: another ingestion
holds the lock."""

from __future__ import annotations

import logging
import shlex
from argparse import SUPPRESS
from collections.abc import Sequence
from dataclasses import fields

from ingestion import IngestionFailed
from ingestion.config import MAX_FIELD_KB_ENV, MAX_RESPONSE_MB_ENV, IngestionConfig
from moovitamix.command import Command, Commands, UsageError
from moovitamix.simulator_process import SimulatorError, api_or_simulator

log = logging.getLogger("ingestion")


def _ingest(cmd: Command) -> None:
    args, settings = cmd.args, cmd.settings
    if args.bucket_url and args.destination not in (None, "filesystem"):
        raise UsageError("--bucket-url needs --destination filesystem")
    knobs = {
        f.name: getattr(args, f.name) for f in fields(IngestionConfig) if hasattr(args, f.name)
    }
    if args.max_response_mb is not None:
        knobs["max_response_bytes"] = int(args.max_response_mb * 2**20)
    if args.max_field_kb is not None:
        knobs["max_field_bytes"] = int(args.max_field_kb * 2**10)
    try:
        config = IngestionConfig(**knobs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    # imported here: dlt takes a second to import, --help should not wait for it
    from ingestion.console import print_summary
    from ingestion.pipeline import run_ingestion

    lake = args.bucket_url or settings.engine == "spark"
    destination = args.destination or ("filesystem" if lake else "postgres")
    simulator = shlex.split(args.simulator_args)
    with api_or_simulator(settings, cmd.run_id, simulator, args.api_url) as (api_url, sim_log):
        if sim_log:
            unset = "MOOVITAMIX_API_URL is unset"
            log.info("%s: started the built-in simulator at %s (log %s)", unset, api_url, sim_log)
        result = run_ingestion(
            settings,
            cmd.run_id,
            api_url=api_url,
            config=config,
            warehouse=cmd.warehouse,
            destination=destination,
            bucket_url=args.bucket_url,
        )
    print_summary(result)


def main(argv: Sequence[str] | None = None) -> int:
    commands = Commands(
        "python -m ingestion", __doc__, step_errors=(IngestionFailed, SimulatorError)
    )
    add, knob = commands.add(None, _ingest, run_log=True).add_argument, {"default": SUPPRESS}
    add("--api-url", help="the API (default: MOOVITAMIX_API_URL; unset: the built-in simulator)")
    add("--simulator-args", default="", metavar="ARGS", help="e.g. '--users 5000 --day 1'")
    add("--concurrency", type=int, **knob, help="pages in flight (dlt's workers)")
    add("--max-attempts", type=int, **knob, help="attempts per page")
    add("--backoff", type=float, dest="backoff_base_s", metavar="BACKOFF", **knob,
        help="first retry delay, doubling")  # fmt: skip
    add("--connect-timeout", type=float, dest="connect_timeout_s", **knob, metavar="SECONDS")
    add("--read-timeout", type=float, dest="read_timeout_s", **knob, metavar="SECONDS")
    add("--max-reject-share", type=float, **knob, metavar="SHARE",
        help="share of an endpoint's records that may break the contract")  # fmt: skip
    add("--max-response-mb", type=float, metavar="MB", help=f"default ${MAX_RESPONSE_MB_ENV} or 50")
    add("--max-field-kb", type=float, metavar="KB", help=f"default ${MAX_FIELD_KB_ENV} or 64")
    add("--destination", choices=("postgres", "filesystem", "duckdb"),
        help="postgres: schema raw (scd2); filesystem: a snapshot appended to the Parquet lake; "
        "duckdb: dlt's DuckDB (scd2) (default: filesystem on MOOVITAMIX_ENGINE=spark or with "
        "--bucket-url)")  # fmt: skip
    add("--bucket-url", metavar="URL", help="the lake (default: DESTINATION__FILESYSTEM__"
        "BUCKET_URL, else LAKE_URL, else the data dir's lake)")  # fmt: skip
    add("--no-progress", action="store_false", dest="progress", **knob, help="no progress bars")
    return commands.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
