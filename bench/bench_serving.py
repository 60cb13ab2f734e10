"""Benchmark of the serving API: latency per route at fixed request rates, and errors while a
publish swaps the model.

One run, in a scratch database `moovitamix_bench_serving` on the warehouse in use (the embedded
one by default), with the models in a temporary directory:

1. data: tests/ml/synthetic.py's marts (4 scenes per genre) at `--users` x `--tracks`, a model
   trained and published by ml's own `run_training` (no search), as mvx_ml;
2. the API: `python -m serving --workers N` on a free loopback port (a real uvicorn process);
3. the load: an asyncio client (aiohttp) sending requests at fixed rates (open loop: a request
   is sent on schedule whether or not earlier ones came back), each phase `--duration` seconds:
   GETs (user lists, 1% unknown users, and play-next lists) at `--get-rate`, then fold-ins
   (the user's history plus 0-20 recent tracks) at `--fold-rate`, then both at once while
   `run_training` publishes another model (with `--publish-threads`, 1 by default, so that the
   API keeps a core), until the API serves it;
4. per route: requests, errors (an answer other than 200, or none), timeouts (no answer in
   30 s: the machine could not keep up), throughput, p50/p95/p99 from send to response.

The client runs on the same machine as the API (and the warehouse): its CPU is taken from the
server's, so it is aiohttp's (a quarter of httpx's async client per request, measured here:
0.3 against 1.2-1.5 ms). `client_lag_p99_ms` says how late the client sent its requests;
`server_cpu_ms_per_request` is the API processes' CPU time over the requests served.

Goals on 2 cores: GET p99 < 20 ms at 300 req/s, fold-in p99 < 50 ms at 100 req/s, zero
errors while a publish happens.

    .venv/bin/python bench/bench_serving.py                           # 100k users x 50k tracks
    .venv/bin/python bench/bench_serving.py --users 20000 --tracks 10000 --duration 10
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (see ml/__init__.py)

import argparse
import asyncio
import json
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import psutil
from psycopg import sql

from ml.config import load_config
from ml.train import run_training
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import APP, ML, as_role, ensure_roles
from moovitamix.settings import PROJECT_ROOT, Settings, apply_offline_defaults, load_settings
from moovitamix.warehouse import connect, open_warehouse
from tests.ml.synthetic import SyntheticMarts, generate, write_marts

BENCH_DATABASE = "moovitamix_bench_serving"
RESULTS = Path(__file__).resolve().parent / "results" / "serving.json"
TOKEN = secrets.token_urlsafe(24)  # this run's bearer token
GOALS_MS = {"get_p99": 20.0, "fold_in_p99": 50.0}
MAX_RECENT = 20
TIMEOUT_S = 30  # a request unanswered this long counts as a timeout (the machine overloaded)
Request = tuple[str, str, str, dict[str, Any] | None]  # route label, method, path, json body


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--get-rate", type=float, default=300.0, help="GET requests/s")
    parser.add_argument("--fold-rate", type=float, default=100.0, help="fold-in requests/s")
    parser.add_argument(
        "--warm-up", type=float, default=10.0, help="seconds at half the rates first (cold pages)"
    )
    parser.add_argument("--publish-timeout", type=float, default=600.0)
    parser.add_argument(
        "--publish-rates",
        type=float,
        nargs=2,
        default=None,
        metavar=("GET", "FOLD"),
        help="the rates while a publish happens (default: --get-rate and --fold-rate)",
    )
    parser.add_argument(
        "--publish-threads", type=int, default=1, help="the publishing run's threads (0: all)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


# --- the warehouse and the API ----------------------------------------------------------------


def drop_database(url: ConnectionURL) -> None:
    with connect(url.with_database("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(BENCH_DATABASE)
            )
        )


def train(
    settings: Settings, url: ConnectionURL, artifacts: Path, run_id: str, seed: int, threads: int
) -> str:
    """ml's training as the daily run does it (as mvx_ml), published; the serving run id."""
    config = load_config(
        overrides=[
            "selection.max_challengers=0",
            f"runtime.num_threads={threads}",
            f"model.random_state={seed}",
            f"artifacts.root={artifacts}",
            "artifacts.keep=5",
        ]
    )
    result = run_training(
        settings, run_id, config=config, warehouse=as_role(url, ML), champion_from_config=True
    )
    return result.serving_model_run_id


def prepare(url: ConnectionURL, marts: SyntheticMarts) -> None:
    """The scratch warehouse: marts written, roles and grants as the daily run leaves them."""
    drop_database(url)
    open_warehouse(load_settings({"WAREHOUSE_URL": url.url()}))  # creates it, roles and schemas
    with connect(url) as conn:
        write_marts(conn, marts)
    ensure_roles(url)
    with connect(url) as conn:  # what dbt's grants config gives fct_listens
        conn.execute(sql.SQL("grant select on marts.fct_listens to {}").format(sql.Identifier(APP)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(url: ConnectionURL, artifacts: Path, workers: int, log: Path) -> tuple[Any, str]:
    port = free_port()
    env = {
        **os.environ,
        "WAREHOUSE_URL": url.url(),
        "SERVING_TOKENS": TOKEN,
        "SERVING_ARTIFACTS_DIR": str(artifacts),
    }
    command = [sys.executable, "-m", "serving", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise RuntimeError(f"the API did not answer in 120 s; see {log}")


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Samples:
    latency_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # an answer other than 200
    timeouts: dict[str, int] = field(default_factory=dict)  # no answer in TIMEOUT_S: overload
    lag_ms: list[float] = field(default_factory=list)
    runs: dict[str, set[str]] = field(default_factory=dict)
    error_examples: list[str] = field(default_factory=list)


async def send(
    client: aiohttp.ClientSession, request: Request, due: float, samples: Samples
) -> None:
    route, method, path, body = request
    loop = asyncio.get_running_loop()
    samples.lag_ms.append((loop.time() - due) * 1000)
    started = time.perf_counter()
    try:
        async with client.request(method, path, json=body) as response:
            ok = response.status == 200
            if ok:
                samples.runs.setdefault(route, set()).add((await response.json())["model_run_id"])
            elif len(samples.error_examples) < 5:
                text = (await response.text())[:200]
                samples.error_examples.append(f"{route}: {response.status} {text}")
    except TimeoutError:
        samples.timeouts[route] = samples.timeouts.get(route, 0) + 1
        return
    except aiohttp.ClientError as exc:
        ok = False
        if len(samples.error_examples) < 5:
            samples.error_examples.append(f"{route}: {type(exc).__name__} {exc}")
    elapsed = (time.perf_counter() - started) * 1000
    if ok:
        samples.latency_ms.setdefault(route, []).append(elapsed)
    else:
        samples.errors[route] = samples.errors.get(route, 0) + 1


async def fixed_rate(
    client: aiohttp.ClientSession,
    make: Callable[[int], Request],
    rate: float,
    samples: Samples,
    until: Callable[[float], bool],
) -> None:
    """Send make(0), make(1), ... at `rate` per second, on schedule, until `until(elapsed)`."""
    loop = asyncio.get_running_loop()
    start, tasks, i = loop.time(), set(), 0
    while not until(loop.time() - start):
        due = start + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        task = asyncio.create_task(send(client, make(i), due, samples))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    await asyncio.gather(*tasks)


class Workload:
    """Deterministic requests over the bench's users and tracks."""

    def __init__(self, marts: SyntheticMarts, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.users = marts.user_ids
        self.tracks = marts.track_ids
        self.unknown = int(marts.user_ids.max()) + 1

    def get(self, i: int) -> Request:
        if i % 2:
            track = int(self.rng.choice(self.tracks))
            return ("GET next", "GET", f"/tracks/{track}/next?k=10", None)
        unknown = self.rng.random() < 0.01
        user = self.unknown + i if unknown else int(self.rng.choice(self.users))
        return ("GET user", "GET", f"/users/{user}/recommendations?k=10", None)

    def fold_in(self, i: int) -> Request:
        user = int(self.rng.choice(self.users))
        recent = self.rng.choice(self.tracks, int(self.rng.integers(0, MAX_RECENT + 1)))
        body = {"recent_track_ids": recent.tolist(), "k": 10}
        return ("POST fold-in", "POST", f"/users/{user}/recommendations", body)


def summary(samples: Samples, seconds: float) -> dict[str, Any]:
    routes = sorted(set(samples.latency_ms) | set(samples.errors) | set(samples.timeouts))
    out: dict[str, Any] = {"seconds": round(seconds, 1), "routes": {}}
    for route in routes:
        ms = np.array(samples.latency_ms.get(route, []))
        p50, p95, p99 = np.percentile(ms, [50, 95, 99]) if len(ms) else (np.nan,) * 3
        out["routes"][route] = {
            "requests": len(ms) + samples.errors.get(route, 0) + samples.timeouts.get(route, 0),
            "errors": samples.errors.get(route, 0),
            "timeouts": samples.timeouts.get(route, 0),
            "per_s": round(len(ms) / seconds, 1),
            "p50_ms": round(float(p50), 2),
            "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2),
            "model_runs": sorted(samples.runs.get(route, set())),
        }
    lag = np.array(samples.lag_ms) if samples.lag_ms else np.zeros(1)
    out["client_lag_p99_ms"] = round(float(np.percentile(lag, 99)), 2)
    out["error_examples"] = samples.error_examples
    return out


def cpu_seconds(server: psutil.Process) -> float:
    """CPU time of the API: uvicorn's process and its workers."""
    total = 0.0
    for process in (server, *server.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def phase(
    base: str,
    server: psutil.Process,
    loads: list[tuple[Callable[[int], Request], float]],
    until: Callable[[float], bool],
) -> dict[str, Any]:
    samples = Samples()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    started, cpu, load = time.perf_counter(), cpu_seconds(server), os.getloadavg()[0]
    async with aiohttp.ClientSession(
        base, headers=headers, connector=connector, timeout=timeout
    ) as client:
        await asyncio.gather(
            *(fixed_rate(client, make, rate, samples, until) for make, rate in loads)
        )
    found = summary(samples, time.perf_counter() - started)
    served = sum(len(ms) for ms in samples.latency_ms.values())
    found["server_cpu_ms_per_request"] = round(
        (cpu_seconds(server) - cpu) / max(served, 1) * 1000, 3
    )
    found["load_average_1m"] = {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)}
    return found


def print_phase(name: str, found: dict[str, Any]) -> None:
    print(
        f"  {name}: {found['seconds']} s, client lag p99 {found['client_lag_p99_ms']} ms, "
        f"server CPU {found['server_cpu_ms_per_request']} ms/request, "
        f"load average {found['load_average_1m']}"
    )
    for route, r in found["routes"].items():
        print(
            f"    {route:<13} {r['requests']:>6} req {r['errors']:>4} err {r['timeouts']:>5} t/o "
            f"{r['per_s']:>7}/s  "
            f"p50 {r['p50_ms']:>7} p95 {r['p95_ms']:>7} p99 {r['p99_ms']:>7} ms"
        )
    for example in found["error_examples"]:
        print(f"    error: {example}")


def during_publish(
    base: str,
    server: psutil.Process,
    work: Workload,
    args: argparse.Namespace,
    publish: Callable[[], str],
) -> dict[str, Any]:
    """GETs and fold-ins at their rates while a training run publishes, until the API has
    served the new model for `--duration` / 4 seconds (or the publish failed)."""
    state: dict[str, Any] = {}
    stop = threading.Event()

    def run() -> None:
        try:
            state["run"] = publish()
            published = time.monotonic()
            while time.monotonic() < published + args.publish_timeout:
                if httpx.get(f"{base}/health").json()["fold_in_model_run_id"] == state["run"]:
                    state["swap_seen_after_s"] = round(time.monotonic() - published, 2)
                    time.sleep(args.duration / 4)
                    break
                time.sleep(0.25)
        except Exception as exc:  # reported in the results; the load stops
            state["error"] = repr(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=run)
    thread.start()
    get_rate, fold_rate = args.publish_rates or (args.get_rate, args.fold_rate)
    loads = [(work.get, get_rate), (work.fold_in, fold_rate)]
    found = asyncio.run(phase(base, server, loads, lambda _: stop.is_set()))
    thread.join()
    found["published_model_run"] = state.get("run")
    found["publish_error"] = state.get("error")
    found["swap_seen_after_s"] = state.get("swap_seen_after_s")  # after the publish committed
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    settings = load_settings()
    url = open_warehouse(settings).with_database(BENCH_DATABASE)
    scratch = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    artifacts = scratch / "models"
    bench_settings = load_settings(
        {"WAREHOUSE_URL": url.url(), "MOOVITAMIX_DATA_DIR": str(scratch / "data")},
        root=scratch,
    )
    print(f"bench_serving: {args.users:,} users x {args.tracks:,} tracks, {args.workers} workers")
    phases: dict[str, Any] = {}
    timings: dict[str, float] = {}
    process = None
    try:
        started = time.perf_counter()
        marts = generate(args.users, args.tracks, args.seed, clusters_per_genre=4)
        prepare(url, marts)
        first = train(bench_settings, url, artifacts, "20261201T000000Z-bench1", 42, 0)
        timings["prepare_s"] = round(time.perf_counter() - started, 1)
        print(f"  data and model {first} ready in {timings['prepare_s']} s", flush=True)
        process, base = start_api(url, artifacts, args.workers, scratch / "serving.log")
        server = psutil.Process(process.pid)
        work = Workload(marts, args.seed)
        warm_up = [(work.get, args.get_rate / 2), (work.fold_in, args.fold_rate / 2)]
        phases["warm_up"] = asyncio.run(
            phase(base, server, warm_up, lambda elapsed: elapsed > args.warm_up)
        )
        print_phase("warm-up at half the rates", phases["warm_up"])
        for name, make, rate in (
            ("get", work.get, args.get_rate),
            ("fold_in", work.fold_in, args.fold_rate),
        ):
            phases[name] = asyncio.run(
                phase(base, server, [(make, rate)], lambda elapsed: elapsed > args.duration)
            )
            print_phase(f"{name} at {rate:g}/s", phases[name])

        def publish() -> str:
            return train(
                bench_settings, url, artifacts, "20261202T000000Z-bench2", 7, args.publish_threads
            )

        phases["publish"] = during_publish(base, server, work, args, publish)
        rates = "/".join(f"{r:g}" for r in args.publish_rates or (args.get_rate, args.fold_rate))
        print_phase(f"both ({rates}/s) while a publish happens", phases["publish"])
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)
        if not args.keep:
            drop_database(url)
    get_p99 = max(r["p99_ms"] for r in phases["get"]["routes"].values())
    fold_p99 = phases["fold_in"]["routes"]["POST fold-in"]["p99_ms"]
    publish_errors = sum(r["errors"] for r in phases["publish"]["routes"].values())
    goals = {
        "get_p99_ms": (get_p99, GOALS_MS["get_p99"], get_p99 < GOALS_MS["get_p99"]),
        "fold_in_p99_ms": (fold_p99, GOALS_MS["fold_in_p99"], fold_p99 < GOALS_MS["fold_in_p99"]),
        "errors_during_publish": (
            publish_errors,
            0,
            publish_errors == 0 and phases["publish"]["swap_seen_after_s"] is not None,
        ),
    }
    for name, (value, goal, met) in goals.items():
        print(f"  {name}: {value} (goal {goal}): {'met' if met else 'NOT met'}")
    out = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "users": args.users,
        "tracks": args.tracks,
        "workers": args.workers,
        "rates": {
            "get": args.get_rate,
            "fold_in": args.fold_rate,
            "during_publish": args.publish_rates or [args.get_rate, args.fold_rate],
        },
        "duration_s": args.duration,
        "timings": timings,
        "phases": phases,
        "goals": {k: dict(zip(("value", "goal", "met"), v, strict=True)) for k, v in goals.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
