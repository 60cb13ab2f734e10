"""Benchmark of `make daily`: wall time end to end, per step and per dbt model, and peak RSS,
at the reference size (the embedded defaults: realistic profile, 5k users, 2k tracks), at 100k
users and, on request, at a million (100k tracks).

    .venv/bin/python bench/bench_daily.py                     # reference, then 100k users
    .venv/bin/python bench/bench_daily.py --quick             # reference only
    .venv/bin/python bench/bench_daily.py --sizes 1m          # a million users (~20 min a day)
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
The machine is shared and noisy: compare ratios. The absolute goals are printed next to the
seconds (SIZES: day 0 and a steady day; peak RSS under 2 GB), and each step and dbt model with
its ratio to the same day in the previous results file, the slowest first.
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
# size: (simulator arguments, goal of day 0, goal of a steady day, in seconds)
SIZES = {
    "reference": ("--profile realistic --seed 42 --users 5000 --tracks 2000", 60.0, 60.0),
    "100k": ("--profile realistic --seed 42 --users 100000 --tracks 20000", 45.0, 30.0),
    "1m": ("--profile realistic --seed 42 --users 1000000 --tracks 100000", 600.0, 300.0),
}
MAX_RSS_MB = 2048  # the run's peak, at every size
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
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator"], env=env, stdout=out, stderr=err, cwd=ROOT
        )
        _, status, usage = os.wait4(proc.pid, 0)  # its rusage: the run's peak RSS
        seconds = time.perf_counter() - started
        if (code := os.waitstatus_to_exitcode(status)) != 0:
            out.seek(0), err.seek(0)
            print(out.read()[-2000:], err.read()[-4000:], file=sys.stderr)
            raise SystemExit(f"daily run of day {day} failed (exit {code})")
    with psycopg.connect(url) as conn:
        steps = conn.execute(
            "select step, seconds, details from monitoring.pipeline_run_steps "
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
        "steps": {step: round(float(s or 0), 2) for step, s, _ in steps},
        # from the run ledger's details: seconds per dbt model, per phase of the training
        "models": _details(steps, "transform", "seconds"),
        "train_phases": _details(steps, "train", "timings_s"),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        # the run process's high-water mark after each step (the run ledger): where it rose
        "peak_rss_mb_after": {
            step: float(details["process_peak_rss_mb"])
            for step, _, details in steps
            if "process_peak_rss_mb" in details
        },
        "rows": rows,
    }


def _rises(after: dict[str, float]) -> str:
    """The steps that raised the process's high-water mark, with the mark after each."""
    rises, mark = [], 0.0
    for step, mb in after.items():
        if mb > mark:
            rises.append(f"{step} {mb:,.0f}")
            mark = mb
    return ", ".join(rises)


def _details(steps: list[tuple], step: str, key: str) -> dict[str, float]:
    return next((dict(details.get(key, {})) for name, _, details in steps if name == step), {})


def bench_size(
    name: str, simulator_args: str, engine: str = "postgres", days: tuple[int, ...] = (0, 1)
) -> list[dict[str, Any]]:
    url = scratch_database(engine)
    with tempfile.TemporaryDirectory(prefix=f"bench-daily-{name}-{engine}-") as tmp:
        return [run_day(url, Path(tmp), simulator_args, day, engine) for day in days]


def previous_day(size: dict[str, Any] | None, day: dict[str, Any]) -> dict[str, Any] | None:
    """The same engine's same day in the previous results of this size, if any."""
    if not size:
        return None
    for earlier in size.get("days", []):
        if (earlier["engine"], earlier["day"]) == (day["engine"], day["day"]):
            return {**earlier, "measured_at": size.get("measured_at", "?")}
    return None


def print_breakdown(day: dict[str, Any], before: dict[str, Any] | None) -> None:
    """Seconds per step, per dbt model and per training phase (slowest first), each with its
    ratio to `before` (the previous results file's same day), so a change shows where it moved
    time."""

    def rows(now: dict[str, float], then: dict[str, float]) -> list[str]:
        lines = []
        for name, seconds in sorted(now.items(), key=lambda item: -item[1]):
            was = then.get(name)
            ratio = f"{seconds / was:5.2f}x" if was else "    -"
            lines.append(f"      {name:<42} {seconds:8.1f}s  {ratio}  (was {_s(was)})")
        return lines

    then = before or {}
    if before:
        ratio = day["seconds"] / before["seconds"]
        was = f"{before['measured_at']}: {_s(before['seconds'])}"
        print(f"    {ratio:.2f}x the previous results ({was})")
    print("    step" + "".join(f"\n{line}" for line in rows(day["steps"], then.get("steps", {}))))
    for key, title in (("models", "dbt model (transform)"), ("train_phases", "train phase")):
        if day.get(key):
            lines = rows(day[key], then.get(key, {}))
            print(f"    {title}" + "".join(f"\n{line}" for line in lines))


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s"


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
    out = SPARK_RESULTS if args.engine == "spark" else RESULTS
    previous = json.loads(out.read_text()).get("sizes", {}) if out.exists() else {}
    baseline = baseline_seconds()
    print(f"baseline (fresh process importing dlt, dbt, GX, implicit): {baseline:.1f}s")
    results: dict[str, Any] = {}
    for name in names:
        simulator_args, *goals = SIZES[name]
        print(f"== {name}: {simulator_args}", flush=True)
        days: list[dict[str, Any]] = []
        for engine in engines:
            days += bench_size(name, simulator_args, engine, run_days)
        results[name] = {"simulator_args": simulator_args, "goals_s": goals, "days": days}
        on_postgres = {d["day"]: d["seconds"] for d in days if d["engine"] == "postgres"}
        for day in days:
            goal = goals[min(day["day"], 1)]
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
            memory = "meets" if day["peak_rss_mb"] <= MAX_RSS_MB else "MISSES"
            rises = _rises(day.get("peak_rss_mb_after", {}))
            print(
                f"    peak RSS {day['peak_rss_mb']:,.0f} MB ({memory} the {MAX_RSS_MB} MB goal)"
                + (f"; rose in {rises}" if rises else "")
            )
            print_breakdown(day, previous_day(previous.get(name), day))
    out.parent.mkdir(parents=True, exist_ok=True)
    # one file per engine choice; a run replaces the sizes it measured and keeps the others
    context = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "load_average_at_end": [round(load, 2) for load in os.getloadavg()],
        "spark_driver_memory": os.environ.get("SPARK_DRIVER_MEMORY", "default"),
        "baseline_s": round(baseline, 2),
    }
    for result in results.values():
        result.update(context)
    out.write_text(json.dumps({"sizes": previous | results}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
