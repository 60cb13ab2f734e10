"""Benchmark of `make daily`: wall time end to end and per step, at the reference size (the
embedded defaults: realistic profile, 5k users, 2k tracks) and at 100k users.

    .venv/bin/python bench/bench_daily.py                     # reference, then 100k users
    .venv/bin/python bench/bench_daily.py --quick             # reference only
    .venv/bin/python bench/bench_daily.py --engine spark      # Spark beside Postgres, each size

Each size runs on a scratch database `moovitamix_bench_daily` of the warehouse in use (the
embedded one by default; the real warehouse database is never touched) with its own data dir:
day 0 (everything new) then day 1 (the steady state cron sees: an incremental day). Each run is
the real entry point in a subprocess (`python -m orchestrator`, the built-in simulator) and
its steps' seconds come from the run ledger.

The baseline, measured in the same run: a fresh Python process that imports the four tools a
run needs (dlt, dbt, Great Expectations, implicit), i.e. the floor any daily run pays before it
does work. With `--engine spark`, every size runs on Postgres and then on the Spark engine
(`MOOVITAMIX_ENGINE=spark`, local mode, its own lake and metastore), on the same simulator data,
and the Spark/Postgres ratio of each day is printed: the Postgres run is the Spark run's baseline.
The machine is shared and noisy: compare ratios; the absolute goals (reference under 60 s after
the first install, 100k users under 10 minutes) are printed next to the seconds.
Results: bench/results/daily.json (daily-spark.json with --engine spark), by size: a run
replaces the sizes it measured, each with its own time, machine load and baseline.
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
SPARK_RESULTS = ROOT / "bench" / "results" / "daily-spark.json"
DATABASE = "moovitamix_bench_daily"
SIZES = {
    "reference": ("--profile realistic --seed 42 --users 5000 --tracks 2000", 60.0),
    "100k": ("--profile realistic --seed 42 --users 100000 --tracks 20000", 600.0),
    "1m": ("--profile realistic --seed 42 --users 1000000 --tracks 100000", 3600.0),
}
DEFAULT_SIZES = ("reference", "100k")
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


def scratch_database(engine: str = "postgres") -> str:
    """A new database for one engine's runs (on Spark it holds the control plane only)."""
    name = DATABASE if engine == "postgres" else f"{DATABASE}_{engine}"
    admin = resolve_url(load_settings()).with_database("postgres")
    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return admin.with_database(name).url()


def run_day(
    url: str, data_dir: Path, simulator_args: str, day: int, engine: str = "postgres"
) -> dict[str, Any]:
    args = simulator_args + (f" --day {day}" if day else "")
    env = _env(
        {
            "WAREHOUSE_URL": url,
            "MOOVITAMIX_DATA_DIR": str(data_dir),
            "MOOVITAMIX_LOGS_DIR": str(data_dir / "logs"),
            "MOOVITAMIX_SIMULATOR_ARGS": args,
            "MOOVITAMIX_ENGINE": engine,
        }
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator"],
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
        # read from the control plane, so the same on both engines
        rows = dict(
            conn.execute(
                "select 'listen_pairs', n_interactions from ml.model_runs "
                "where status = 'champion' order by trained_at desc limit 1"
            ).fetchall()
            + conn.execute(
                "select 'user_top_tracks', count(*) from recommendations.user_top_tracks"
            ).fetchall()
        )
    return {
        "engine": engine,
        "day": day,
        "seconds": round(seconds, 2),
        "steps": {step: round(float(s or 0), 2) for step, s in steps},
        "rows": rows,
    }


def bench_size(
    name: str, simulator_args: str, engine: str = "postgres", days: tuple[int, ...] = (0, 1)
) -> list[dict[str, Any]]:
    url = scratch_database(engine)
    with tempfile.TemporaryDirectory(prefix=f"bench-daily-{name}-{engine}-") as tmp:
        return [run_day(url, Path(tmp), simulator_args, day, engine) for day in days]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the reference size only")
    parser.add_argument("--sizes", default=None, help=f"comma-separated of {', '.join(SIZES)}")
    parser.add_argument(
        "--engine",
        choices=("postgres", "spark"),
        default="postgres",
        help="spark: each size on Postgres, then on the Spark engine, same data (ratio printed)",
    )
    parser.add_argument(
        "--days", default="0,1", help="which days to run (0: everything new; 1: a steady day)"
    )
    args, _ = parser.parse_known_args(argv)  # `make bench ARGS=...` passes every bench its args
    apply_offline_defaults()
    names = (args.sizes or ("reference" if args.quick else ",".join(DEFAULT_SIZES))).split(",")
    engines = ("postgres", "spark") if args.engine == "spark" else ("postgres",)
    run_days = tuple(int(day) for day in args.days.split(","))
    baseline = baseline_seconds()
    print(f"baseline (fresh process importing dlt, dbt, GX, implicit): {baseline:.1f}s")
    results: dict[str, Any] = {}
    for name in names:
        simulator_args, goal = SIZES[name]
        print(f"== {name}: {simulator_args}", flush=True)
        days: list[dict[str, Any]] = []
        for engine in engines:
            days += bench_size(name, simulator_args, engine, run_days)
        results[name] = {"simulator_args": simulator_args, "goal_s": goal, "days": days}
        on_postgres = {d["day"]: d["seconds"] for d in days if d["engine"] == "postgres"}
        for day in days:
            verdict = "meets" if day["seconds"] <= goal else "MISSES"
            versus = ""
            if day["engine"] != "postgres":
                day["vs_postgres"] = round(day["seconds"] / on_postgres[day["day"]], 2)
                versus = f", {day['vs_postgres']:.2f}x Postgres"
            print(
                f"  {day['engine']:<8} day {day['day']}: {day['seconds']:7.1f}s = "
                f"{day['seconds'] / baseline:5.1f}x baseline{versus} "
                f"({verdict} the {goal:.0f}s goal); rows {day['rows']}"
            )
            print("    " + ", ".join(f"{s} {t:.1f}s" for s, t in day["steps"].items()))
    out = SPARK_RESULTS if args.engine == "spark" else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    # one file per engine choice; a run replaces the sizes it measured and keeps the others
    kept = json.loads(out.read_text()).get("sizes", {}) if out.exists() else {}
    context = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        "spark_driver_memory": os.environ.get("SPARK_DRIVER_MEMORY", "default"),
        "baseline_s": round(baseline, 2),
    }
    for result in results.values():
        result.update(context)
    out.write_text(json.dumps({"sizes": kept | results}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
