"""Benchmark of `make daily`: wall time end to end and per step, at the reference size (the
embedded defaults: realistic profile, 5k users, 2k tracks) and at 100k users.

    .venv/bin/python bench/bench_daily.py                     # reference, then 100k users
    .venv/bin/python bench/bench_daily.py --quick             # reference only

Each size runs on a scratch database `moovitamix_bench_daily` of the warehouse in use (the
embedded one by default; the real warehouse database is never touched) with its own data dir:
day 0 (everything new) then day 1 (the steady state cron sees: an incremental day). Each run is
the real entry point in a subprocess (`python -m moovitamix.daily`, the built-in simulator) and
its steps' seconds come from the run ledger.

The baseline, measured in the same run: a fresh Python process that imports the four tools a
run needs (dlt, dbt, Great Expectations, implicit), i.e. the floor any daily run pays before it
does work. The machine is shared and noisy: compare ratios; the absolute goals (reference under
60 s after the first install, 100k users under 10 minutes) are printed next to the seconds.
Results: bench/results/daily.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from moovitamix.settings import apply_offline_defaults, load_settings  # noqa: E402
from moovitamix.warehouse import resolve_url  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "daily.json"
DATABASE = "moovitamix_bench_daily"
SIZES = {
    "reference": ("--profile realistic --seed 42 --users 5000 --tracks 2000", 60.0),
    "100k": ("--profile realistic --seed 42 --users 100000 --tracks 20000", 600.0),
}
IMPORTS = "import dlt, dbt.cli.main, great_expectations, implicit"


def baseline_seconds(repeats: int = 2) -> float:
    """Best of `repeats`: a fresh interpreter importing the tools of a run."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], check=True, env=_env({}))
        best = min(best, time.perf_counter() - started)
    return best


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false", "GX_ANALYTICS_ENABLED": "false"}
    env.pop("MOOVITAMIX_API_URL", None)
    return {**env, **extra}


def scratch_database() -> str:
    admin = resolve_url(load_settings()).with_database("postgres")
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DATABASE))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(DATABASE)))
    return admin.with_database(DATABASE).url()


def run_day(url: str, data_dir: Path, simulator_args: str, day: int) -> dict[str, Any]:
    args = simulator_args + (f" --day {day}" if day else "")
    env = _env(
        {
            "WAREHOUSE_URL": url,
            "MOOVITAMIX_DATA_DIR": str(data_dir),
            "MOOVITAMIX_LOGS_DIR": str(data_dir / "logs"),
            "MOOVITAMIX_SIMULATOR_ARGS": args,
        }
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "moovitamix.daily"],
        env=env, capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"daily run of day {day} failed (exit {result.returncode})")
    with psycopg.connect(url) as conn:
        steps = conn.execute(
            "select step, seconds from monitoring.pipeline_run_steps "
            "where run_id = (select run_id from monitoring.pipeline_runs "
            "                order by started_at desc limit 1) order by step_order"
        ).fetchall()
        rows = dict(
            conn.execute(
                "select 'fct_listens', count(*) from marts.fct_listens union all "
                "select 'user_top_tracks', count(*) from recommendations.user_top_tracks"
            ).fetchall()
        )
    return {
        "day": day,
        "seconds": round(seconds, 2),
        "steps": {step: round(float(s or 0), 2) for step, s in steps},
        "rows": rows,
    }


def bench_size(name: str, simulator_args: str) -> list[dict[str, Any]]:
    url = scratch_database()
    with tempfile.TemporaryDirectory(prefix=f"bench-daily-{name}-") as tmp:
        return [run_day(url, Path(tmp), simulator_args, day) for day in (0, 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the reference size only")
    parser.add_argument("--sizes", default=None, help=f"comma-separated of {', '.join(SIZES)}")
    args, _ = parser.parse_known_args(argv)  # `make bench ARGS=...` passes every bench its args
    apply_offline_defaults()
    names = (args.sizes or ("reference" if args.quick else ",".join(SIZES))).split(",")
    baseline = baseline_seconds()
    print(f"baseline (fresh process importing dlt, dbt, GX, implicit): {baseline:.1f}s")
    results: dict[str, Any] = {}
    for name in names:
        simulator_args, goal = SIZES[name]
        print(f"== {name}: {simulator_args}", flush=True)
        days = bench_size(name, simulator_args)
        results[name] = {"simulator_args": simulator_args, "goal_s": goal, "days": days}
        for day in days:
            verdict = "meets" if day["seconds"] <= goal else "MISSES"
            print(
                f"  day {day['day']}: {day['seconds']:7.1f}s = {day['seconds'] / baseline:5.1f}x "
                f"baseline ({verdict} the {goal:.0f}s goal); rows {day['rows']}"
            )
            print("    " + ", ".join(f"{s} {t:.1f}s" for s, t in day["steps"].items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "baseline_s": round(baseline, 2),
                "sizes": results,
            },
            indent=2,
        )
    )
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
