"""Ingestion benchmark: the whole ingestion against the bare fetch of the same pages.

    python bench/bench_ingestion.py [--users 100000] [--tracks 50000] [--concurrency 8]

Starts its own simulator (realistic profile) and a throw-away embedded Postgres, then measures
in one go:
- the ceiling: a bare concurrent HTTP fetch of every page of the three endpoints (http.client,
  keep-alive, the same concurrency), bodies discarded: what fetching alone costs; the same
  fetch with httpx is timed too (the ceiling of earlier results, for comparison);
- the ingestion, in a child process (`run_ingestion`, as `make ingest` runs it): wall time and
  peak RSS (the child's ru_maxrss), on an empty warehouse, then again on unchanged data;
- the store floor: the rows the first ingestion put in raw, dumped to CSV beforehand, COPYed
  into empty copies of the raw tables, one after another, and nothing else (no checks, no
  merge): what storing the rows alone costs the server. A run publishes its rows only once every
  page is in and checked, so fetch + store, one after the other, is the least a run can take;
- CPU: seconds of CPU of the whole machine, the simulator, Postgres and the ingestion during the
  ceiling and the ingestion (the machine's cores are shared by all of them).
The ceiling is measured before and after the ingestion; the faster of the two is used.
Prints the ratios, records/s and items/s; writes bench/results/ingestion.json.
Goal: ingestion <= 1.5 x the ceiling, peak RSS <= 500 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingestion.config import DEFAULT_CONCURRENCY  # noqa: E402
from moovitamix.embedded_warehouse import EmbeddedWarehouse  # noqa: E402
from moovitamix.settings import apply_offline_defaults  # noqa: E402
from moovitamix.simulator_process import running_simulator  # noqa: E402

ENDPOINTS = ("tracks", "users", "listen_history")
RESULTS = ROOT / "bench" / "results" / "ingestion.json"
T = TypeVar("T")


def bare_fetch(api_url: str, concurrency: int) -> dict[str, float]:
    """Every page of every endpoint, concurrently, bodies discarded. Returns seconds, bytes.

    The fastest plain client at hand: one keep-alive http.client connection per thread (the
    ingestion's own HTTP path), so the ceiling is what the API and the network allow."""
    url = urlsplit(api_url)
    local = threading.local()

    def get(endpoint: str, page: int) -> bytes:
        for attempt in (1, 2):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
            try:
                conn.request("GET", f"/{endpoint}?page={page}&size=100")
                response = conn.getresponse()
                body = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                conn.close()  # the server closed an idle keep-alive connection: reconnect once
                local.conn = None
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"{endpoint} page {page}: HTTP {response.status}")
        return body

    started = time.monotonic()
    total_bytes = 0
    with ThreadPoolExecutor(concurrency) as pool:
        for endpoint in ENDPOINTS:
            first = get(endpoint, 1)
            pages = json.loads(first)["pages"]
            total_bytes += len(first)
            bodies = pool.map(lambda page, e=endpoint: len(get(e, page)), range(2, pages + 1))
            total_bytes += sum(bodies)
    return {"seconds": time.monotonic() - started, "bytes": total_bytes}


def bare_fetch_httpx(api_url: str, concurrency: int) -> dict[str, float]:
    """The same with httpx (the ceiling of earlier measurements: ~1.5 ms more CPU a request)."""
    started = time.monotonic()
    total_bytes = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=api_url, limits=limits, timeout=60) as client:
        for endpoint in ENDPOINTS:
            first = client.get(f"/{endpoint}", params={"page": 1, "size": 100})
            first.raise_for_status()
            pages = first.json()["pages"]
            total_bytes += len(first.content)

            def get(page: int, endpoint: str = endpoint) -> int:
                response = client.get(f"/{endpoint}", params={"page": page, "size": 100})
                response.raise_for_status()
                return len(response.content)

            with ThreadPoolExecutor(concurrency) as pool:
                total_bytes += sum(pool.map(get, range(2, pages + 1)))
    return {"seconds": time.monotonic() - started, "bytes": total_bytes}


def run_child(
    api_url: str, warehouse_url: str, data_dir: Path, concurrency: int, root: Path = ROOT
) -> dict:
    """One ingestion in a child process (of the checkout at `root`): its result, wall time and
    peak RSS."""
    env = {
        **os.environ,
        "WAREHOUSE_URL": warehouse_url,
        "MOOVITAMIX_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(root),
    }
    script = root / "bench" / "bench_ingestion.py"
    argv = [sys.executable, str(script), "--child", api_url, "--concurrency", str(concurrency)]
    with tempfile.TemporaryFile("w+") as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
        stderr_lines: list[str] = []
        reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr or []))
        reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        reader.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.stderr.write("".join(stderr_lines[-20:]))
            raise SystemExit(f"the ingestion failed (exit {proc.returncode})")
        out.seek(0)
        result = json.loads(out.read().strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 2)
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)
    return result


def child(api_url: str, concurrency: int) -> None:
    """The ingestion itself (runs in the child): one JSON line on stdout."""
    from ingestion.config import IngestionConfig
    from ingestion.pipeline import run_ingestion
    from moovitamix.run_context import new_run_id
    from moovitamix.settings import load_settings

    apply_offline_defaults()
    config = IngestionConfig(concurrency=concurrency, progress=False)
    samples: list[tuple[float, int]] = []  # (seconds since the start, RSS bytes)
    done = threading.Event()
    me, started = psutil.Process(), time.monotonic()

    def sample() -> None:
        while not done.wait(0.2):
            samples.append((time.monotonic() - started, me.memory_info().rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_ingestion(load_settings(), new_run_id(), api_url=api_url, config=config)
    done.set()
    sampler.join()
    items = result.tables.get("listen_history__items")
    print(
        json.dumps(
            {
                "seconds": round(result.seconds, 2),
                "records": result.records,
                "items_added": items.added if items else 0,
                "endpoint_seconds": {e: round(s.seconds, 2) for e, s in result.endpoints.items()},
                "step_seconds": result.steps,
                "peak_rss_mb_by_step": rss_by_step(samples, result.steps),
                "requests": sum(s.requests for s in result.endpoints.values()),
            }
        )
    )


def rss_by_step(samples: list[tuple[float, int]], steps: dict[str, float]) -> dict[str, float]:
    """The highest sampled RSS (MB) in each step; the steps run one after another, so their
    bounds are the running sums of their seconds (the first also takes the set-up before it)."""
    bounds, end = [], 0.0
    for name, seconds in steps.items():
        end += seconds
        bounds.append((name, end))
    setup = (samples[-1][0] if samples else 0.0) - end  # opening the warehouse, imports
    peaks: dict[str, float] = {}
    for at, rss in samples:
        name = next((n for n, e in bounds if at - setup <= e), bounds[-1][0] if bounds else "")
        peaks[name] = max(peaks.get(name, 0.0), round(rss / 2**20, 1))
    return peaks


class CpuMeter:
    """CPU seconds (user + system) used between start() and stop(): by the whole machine, and
    by the processes named (their exited children included: Postgres' closed backends)."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes

    def _now(self) -> dict[str, float]:
        machine = psutil.cpu_times()
        out = {"machine": machine.user + machine.system + machine.nice}
        for name, proc in self.processes.items():
            total = 0.0
            for p in (proc, *proc.children(recursive=True)):
                try:
                    t = p.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                total += t.user + t.system + t.children_user + t.children_system
            out[name] = total
        return out

    def measure(self, fn: Callable[[], T]) -> tuple[T, dict[str, float]]:
        before = self._now()
        result = fn()
        after = self._now()
        return result, {k: round(after[k] - before[k], 2) for k in before}


def store_floor(warehouse_url: str, tmp_path: Path, pg_meter: CpuMeter) -> dict:
    """COPY the rows of raw's tables, dumped to CSV first, into empty copies of the tables,
    one after another in one session: seconds and Postgres CPU seconds."""
    import psycopg

    tables = ["tracks", "users", "listen_history", "listen_history__items"]
    files = {}
    with psycopg.connect(warehouse_url, autocommit=True) as conn:
        conn.execute("create schema if not exists bench_floor")
        for table in tables:
            path = files[table] = tmp_path / f"floor-{table}.csv"
            with (
                path.open("wb") as out,
                conn.cursor().copy(f"copy raw.{table} to stdout with (format csv)") as copy,
            ):
                for chunk in copy:
                    out.write(chunk)
            conn.execute(f"drop table if exists bench_floor.{table}")
            conn.execute(f"create table bench_floor.{table} (like raw.{table})")
        conn.execute("checkpoint")

        def copy_all() -> float:
            started = time.monotonic()
            for table in tables:
                with (
                    files[table].open("rb") as f,
                    conn.cursor().copy(
                        f"copy bench_floor.{table} from stdin with (format csv)"
                    ) as copy,
                ):
                    while chunk := f.read(2**20):
                        copy.write(chunk)
            return time.monotonic() - started

        seconds, cpu = pg_meter.measure(copy_all)
        conn.execute("drop schema bench_floor cascade")
    size = sum(path.stat().st_size for path in files.values())
    for path in files.values():
        path.unlink()
    return {"seconds": round(seconds, 2), "cpu_s": cpu, "csv_bytes": size}


def compare(args: argparse.Namespace, url: str, admin, tmp_path: Path, ceiling: float) -> dict:
    """This checkout's ingestion against REV's, alternating on the same simulator: per round a
    first load into a fresh database and a rerun on unchanged data, each. Median ratios."""
    import psycopg

    rev = tmp_path / "rev"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(rev), args.compare],
        check=True,
        capture_output=True,
    )
    runs: dict[str, dict[str, list[dict]]] = {"this": {}, "rev": {}}
    try:
        for i in range(args.repeat):
            sides = [("this", ROOT), ("rev", rev)]
            for side, root in sides if i % 2 == 0 else sides[::-1]:
                database = f"bench_{side}_{i}"
                with psycopg.connect(admin.url(), autocommit=True) as conn:
                    conn.execute(f"create database {database}")
                warehouse, data = admin.with_database(database).url(), tmp_path / database
                for kind in ("first", "rerun"):
                    result = run_child(url, warehouse, data, args.concurrency, root)
                    runs[side].setdefault(kind, []).append(result)
                    print(
                        f"compare {side} {kind} {i + 1}: {result['process_wall_s']:.2f}s "
                        f"(run {result['seconds']:.2f}s, peak RSS {result['peak_rss_mb']:.0f} MB)",
                        flush=True,
                    )
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(rev)], check=False
        )
    out: dict = {"rev": args.compare, "runs": runs}
    for kind in ("first", "rerun"):
        this = statistics.median(r["process_wall_s"] for r in runs["this"][kind])
        other = statistics.median(r["process_wall_s"] for r in runs["rev"][kind])
        out[kind] = {
            "this_s": this,
            "rev_s": other,
            "ratio": round(this / other, 2),
            "ratio_to_ceiling": round(this / ceiling, 2),
            "rev_ratio_to_ceiling": round(other / ceiling, 2),
        }
        print(
            f"compare {kind}: this {this:.2f}s, {args.compare} {other:.2f}s: ratio "
            f"{this / other:.2f} (to the bare fetch: {this / ceiling:.2f} vs "
            f"{other / ceiling:.2f})",
            flush=True,
        )
    return out


def simulator_process() -> psutil.Process:
    """The simulator running_simulator started (a child of this process)."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "simulator" in " ".join(child.cmdline()):
                return child
    raise SystemExit("the simulator's process was not found among this process' children")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--tracks", type=int, default=50_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    p.add_argument(
        "--ceiling-concurrency",
        default="4,8,16",
        help="also time the bare fetch at these concurrencies (tuning)",
    )
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument(
        "--compare",
        metavar="REV",
        help="also run the ingestion of git revision REV (a temporary worktree) on "
        "the same data, alternating with this one: first load and rerun, each",
    )
    p.add_argument("--repeat", type=int, default=3, help="rounds of --compare (default 3)")
    p.add_argument("--child", metavar="API_URL", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.concurrency)
        return

    apply_offline_defaults()
    with tempfile.TemporaryDirectory(prefix="bench-ingestion-") as tmp:
        tmp_path = Path(tmp)
        server = EmbeddedWarehouse(tmp_path / "postgres")
        admin = server.start()
        try:
            postmaster = psutil.Process(server.status().pid)
            _bench(args, admin.with_database("postgres"), tmp_path, postmaster)
        finally:
            server.stop()


def _bench(args: argparse.Namespace, admin, tmp_path: Path, postmaster: psutil.Process) -> None:
    import psycopg

    with psycopg.connect(admin.url(), autocommit=True) as conn:
        conn.execute("create database bench")
    warehouse = admin.with_database("bench")
    sim_args = [
        "--seed",
        str(args.seed),
        "--profile",
        "realistic",
        "--users",
        str(args.users),
        "--tracks",
        str(args.tracks),
    ]
    print(f"starting the simulator: {' '.join(sim_args)}", flush=True)
    load_before = load_average()
    with running_simulator(sim_args, log_path=tmp_path / "simulator.log", timeout_s=1800) as url:
        simulator = simulator_process()
        meter = CpuMeter({"simulator": simulator, "postgres": postmaster})
        bare_fetch(url, args.concurrency)  # warm-up: the simulator's first pages are slower
        sweep = {}
        for c in sorted({int(c) for c in args.ceiling_concurrency.split(",") if c}):
            sweep[c] = round(bare_fetch(url, c)["seconds"], 2)
            print(f"bare fetch at concurrency {c}: {sweep[c]:.2f}s", flush=True)
        ceiling_before, ceiling_cpu = meter.measure(lambda: bare_fetch(url, args.concurrency))
        print(f"ceiling: {ceiling_before['seconds']:.2f}s, CPU {ceiling_cpu}", flush=True)
        httpx_ceiling = bare_fetch_httpx(url, args.concurrency)
        print(f"bare fetch with httpx: {httpx_ceiling['seconds']:.2f}s", flush=True)
        first, first_cpu = meter.measure(
            lambda: run_child(url, warehouse.url(), tmp_path / "data", args.concurrency)
        )
        first_cpu["ingestion"] = first["cpu_s"]
        print(
            f"ingestion (empty warehouse): {first['seconds']:.2f}s, "
            f"peak RSS {first['peak_rss_mb']:.0f} MB (by step {first['peak_rss_mb_by_step']}), "
            f"steps {first['step_seconds']}, "
            f"CPU {first_cpu}",
            flush=True,
        )
        floor = store_floor(warehouse.url(), tmp_path, CpuMeter({"postgres": postmaster}))
        print(
            f"store floor (bare COPY of the same rows): {floor['seconds']:.2f}s, "
            f"CPU {floor['cpu_s']}",
            flush=True,
        )
        ceiling_after = bare_fetch(url, args.concurrency)
        print(f"ceiling again: {ceiling_after['seconds']:.2f}s", flush=True)
        rerun = run_child(url, warehouse.url(), tmp_path / "data", args.concurrency)
        print(
            f"ingestion (unchanged data): {rerun['seconds']:.2f}s, "
            f"peak RSS {rerun['peak_rss_mb']:.0f} MB (by step {rerun['peak_rss_mb_by_step']}), "
            f"steps {rerun['step_seconds']}",
            flush=True,
        )
        ceiling = min(ceiling_before["seconds"], ceiling_after["seconds"])
        compared = compare(args, url, admin, tmp_path, ceiling) if args.compare else None
    ceiling = min(ceiling_before["seconds"], ceiling_after["seconds"])
    ratio = first["seconds"] / ceiling
    fetch_and_store = ceiling + floor["seconds"]
    # Even overlapped perfectly, with no check, hash or merge: the CPU the fetch and the store
    # take, spread over every core of the machine.
    cores = os.cpu_count() or 1
    cpu_bound = (ceiling_cpu["machine"] + floor["cpu_s"]["postgres"]) / cores
    results = {
        "benchmark": "ingestion",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "simulator": {
            "seed": args.seed,
            "profile": "realistic",
            "users": args.users,
            "tracks": args.tracks,
        },
        "concurrency": args.concurrency,
        "bare_fetch_seconds_by_concurrency": sweep,
        "ceiling_seconds": round(ceiling, 2),
        "ceiling_runs_seconds": [
            round(ceiling_before["seconds"], 2),
            round(ceiling_after["seconds"], 2),
        ],
        "ceiling_httpx_seconds": round(httpx_ceiling["seconds"], 2),
        "bytes": ceiling_before["bytes"],
        "ingestion": first,
        "ingestion_unchanged_data": rerun,
        "cpu_seconds": {"ceiling": ceiling_cpu, "ingestion": first_cpu},
        "store_floor": floor,
        "fetch_then_store_seconds": round(fetch_and_store, 2),
        "ratio_of_fetch_then_store_to_ceiling": round(fetch_and_store / ceiling, 2),
        "ratio_to_fetch_then_store": round(first["seconds"] / fetch_and_store, 2),
        "cpu_bound_seconds": round(cpu_bound, 2),
        "ratio_of_cpu_bound_to_ceiling": round(cpu_bound / ceiling, 2),
        "ratio_to_ceiling": round(ratio, 2),
        "ratio_to_httpx_ceiling": round(first["seconds"] / httpx_ceiling["seconds"], 2),
        "rerun_ratio_to_ceiling": round(rerun["seconds"] / ceiling, 2),
        "records_per_s": round(first["records"] / first["seconds"]),
        "items_per_s": round(first["items_added"] / first["seconds"]),
        "goals": {
            "ratio_to_ceiling_max": 1.5,
            "peak_rss_mb_max": 500,
            "ratio_met": ratio <= 1.5,
            "rss_met": max(first["peak_rss_mb"], rerun["peak_rss_mb"]) <= 500,
        },
        "compare": compared,
        "bench_process_peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\nratio to the ceiling: {ratio:.2f} (goal <= 1.5; "
        f"{results['ratio_to_httpx_ceiling']:.2f} to the httpx fetch); "
        f"{results['records_per_s']:,} records/s, {results['items_per_s']:,} items/s; "
        f"peak RSS {first['peak_rss_mb']:.0f} MB (goal <= 500)\n"
        f"fetch then store (ceiling + bare COPY of the same rows): {fetch_and_store:.2f}s = "
        f"{fetch_and_store / ceiling:.2f} x the ceiling; the ingestion is "
        f"{results['ratio_to_fetch_then_store']:.2f} x that\n"
        f"CPU bound (fetch + store CPU over {cores} cores, perfectly overlapped, nothing else): "
        f"{cpu_bound:.2f}s = {cpu_bound / ceiling:.2f} x the ceiling\nresults: {args.output}"
    )


if __name__ == "__main__":
    main()
