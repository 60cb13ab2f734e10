"""`python -m ingestion`: load the MooVitamix API into schema raw (what `make ingest` runs), or
with `--destination filesystem [--bucket-url URL]` append a snapshot to the Parquet lake.

Exit codes (moovitamix.exit_codes): 0 ok; 1 the run failed (one line on stderr says why);
2 bad arguments; 3 the warehouse is unreachable; 75 another ingestion holds the lock.
Without MOOVITAMIX_API_URL (or --api-url) the built-in simulator is started, and the first line
says so.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from contextlib import ExitStack

from ingestion.config import MAX_FIELD_KB_ENV, MAX_RESPONSE_MB_ENV, IngestionConfig
from moovitamix import exit_codes
from moovitamix.errors import one_line
from moovitamix.run_context import current_run_id, setup_logging
from moovitamix.settings import apply_offline_defaults, load_settings
from moovitamix.simulator_process import SimulatorError, running_simulator
from moovitamix.warehouse import WarehouseUnreachable

log = logging.getLogger("ingestion")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    d = IngestionConfig()
    p = argparse.ArgumentParser(prog="python -m ingestion", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--api-url", help="the API (default: MOOVITAMIX_API_URL; unset: the built-in simulator)")
    add("--simulator-args", default="", metavar="ARGS", help="e.g. '--users 5000 --day 1'")
    add("--concurrency", type=int, default=d.concurrency, help="pages in flight (dlt's workers)")
    add("--max-attempts", type=int, default=d.max_attempts, help="attempts per page")
    add("--backoff", type=float, default=d.backoff_base_s, help="first retry delay, doubling")
    add("--connect-timeout", type=float, default=d.connect_timeout_s, metavar="SECONDS")
    add("--read-timeout", type=float, default=d.read_timeout_s, metavar="SECONDS")
    add("--max-reject-share", type=float, default=d.max_reject_share, metavar="SHARE",
        help="share of an endpoint's records that may break the contract")  # fmt: skip
    add("--max-response-mb", type=float, metavar="MB", help=f"default ${MAX_RESPONSE_MB_ENV} or 50")
    add("--max-field-kb", type=float, metavar="KB", help=f"default ${MAX_FIELD_KB_ENV} or 64")
    add("--destination", choices=("postgres", "filesystem"),
        help="postgres: schema raw (scd2); filesystem: a snapshot appended to the Parquet lake "
        "(default: filesystem on MOOVITAMIX_ENGINE=spark or with --bucket-url)")  # fmt: skip
    add("--bucket-url", metavar="URL", help="the lake (default: DESTINATION__FILESYSTEM__"
        "BUCKET_URL, else LAKE_URL, else the data dir's lake)")  # fmt: skip
    add("--no-progress", action="store_true", help="no progress bars")
    add("-v", "--verbose", action="store_true", help="debug output on the console")
    args = p.parse_args(argv)
    if args.bucket_url and args.destination == "postgres":
        p.error("--bucket-url needs --destination filesystem")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    settings = load_settings()
    run_id = current_run_id()
    log_file = setup_logging(run_id, settings.logs_dir, verbose=args.verbose)
    caps = {}
    if args.max_response_mb is not None:
        caps["max_response_bytes"] = int(args.max_response_mb * 2**20)
    if args.max_field_kb is not None:
        caps["max_field_bytes"] = int(args.max_field_kb * 2**10)
    try:
        config = IngestionConfig(
            concurrency=args.concurrency, max_attempts=args.max_attempts,
            backoff_base_s=args.backoff, connect_timeout_s=args.connect_timeout,
            read_timeout_s=args.read_timeout, max_reject_share=args.max_reject_share,
            progress=False if args.no_progress else None, **caps,
        )  # fmt: skip
    except ValueError as exc:
        print(f"ingestion: {one_line(exc)}", file=sys.stderr)
        return exit_codes.USAGE

    # Imported here: dlt takes a second to import, --help should not wait for it.
    from ingestion.console import print_summary
    from ingestion.pipeline import IngestionAlreadyRunning, IngestionFailed, run_ingestion

    lake = args.bucket_url or settings.engine == "spark"
    destination = args.destination or ("filesystem" if lake else "postgres")
    with ExitStack() as stack:
        api_url = args.api_url or settings.api_url
        try:
            if not api_url:
                sim_log = settings.logs_dir / f"{run_id}-simulator.log"
                simulator = running_simulator(shlex.split(args.simulator_args), log_path=sim_log)
                api_url = stack.enter_context(simulator)
                log.info("MOOVITAMIX_API_URL is unset: started the built-in simulator at %s "
                         "(log %s)", api_url, sim_log)  # fmt: skip
            result = run_ingestion(settings, run_id, api_url=api_url, config=config,
                                   destination=destination, bucket_url=args.bucket_url)  # fmt: skip
        except WarehouseUnreachable as exc:
            print(f"ingestion: {exc}", file=sys.stderr)
            return exit_codes.WAREHOUSE_UNREACHABLE
        except IngestionAlreadyRunning as exc:
            print(f"ingestion: {exc}", file=sys.stderr)
            return exit_codes.ALREADY_RUNNING
        except (IngestionFailed, SimulatorError) as exc:
            print(f"ingestion failed: {exc}", file=sys.stderr)
            log.debug("failure detail", exc_info=True)
            log.info("run log: %s", log_file)
            return exit_codes.STEP_FAILED
        except Exception as exc:  # a bug: one line here, the traceback in the run log
            print(f"ingestion failed: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
            log.debug("unexpected failure", exc_info=True)
            log.info("run log: %s", log_file)
            return exit_codes.STEP_FAILED
    print_summary(result)
    log.info("run log: %s", log_file)
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
