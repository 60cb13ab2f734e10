"""Benchmark of the API simulator: generation time, start-up time, pages served per second.

    python bench/bench_simulator.py [--scales 1000,100000,1000000] [--requests 300]

For each scale (users; tracks = users / 5, at least 1000): the in-process generation time, the
time from spawning `python -m simulator --port 0` to its ready line, the server's memory, and
pages/s of size 100 over real HTTP (keep-alive httpx clients), sequential and with 8 concurrent
clients, on random pages of the three endpoints. Results go to bench/results/simulator.json;
the ratios printed are against the first (smallest) scale.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simulator.evolve import build_world  # noqa: E402
from simulator.generate import WorldSpec  # noqa: E402
from simulator.launcher import SimulatorProcess  # noqa: E402
from simulator.pools import build_pools  # noqa: E402
from simulator.state import render_page  # noqa: E402

ENDPOINTS = ("tracks", "users", "listen_history")
CONCURRENCY = 8
RESULTS = ROOT / "bench" / "results" / "simulator.json"
# Bounds that the test suite does not assert on the wall clock (tests/simulator/test_scale.py
# checks the shape instead): generation stays vectorised, a page renders from its rows only.
BUDGETS = {"generation_s_per_100k_users": 5.0, "render_ms_per_page": 50.0}


def over_budget(run: dict[str, Any]) -> list[str]:
    """The budgets a run exceeds, said plainly (empty: within all)."""
    per_100k = run["generation_s"] * 100_000 / max(run["users"], 100_000)
    problems = []
    if per_100k > BUDGETS["generation_s_per_100k_users"]:
        problems.append(f"generation {per_100k:.2f} s per 100k users")
    if run["render_ms_per_page"] > BUDGETS["render_ms_per_page"]:
        problems.append(f"render {run['render_ms_per_page']} ms per page")
    return problems


def tracks_for(users: int) -> int:
    return max(1000, users // 5)


def generation_and_render(users: int, tracks: int, seed: int) -> tuple[float, float]:
    """Seconds to build day 0 in-process; milliseconds to render one page of 100 (JSON bytes)."""
    build_pools(seed)  # a fixed cost, measured as part of start-up
    started = time.perf_counter()
    world = build_world(WorldSpec(seed=seed, users=users, tracks=tracks), day=0)
    generation = time.perf_counter() - started
    rng = random.Random(seed)
    pages = [
        (e, rng.randint(1, tracks // 100 if e == "tracks" else users // 100))
        for e in ENDPOINTS * 100
    ]
    started = time.perf_counter()
    for endpoint, page in pages:
        render_page(world, endpoint, page, 100)
    return generation, (time.perf_counter() - started) * 1000 / len(pages)


def plan(totals: dict[str, int], count: int, rng: random.Random) -> list[tuple[str, int]]:
    requests = []
    for i in range(count):
        endpoint = ENDPOINTS[i % len(ENDPOINTS)]
        requests.append((endpoint, rng.randint(1, max(1, (totals[endpoint] + 99) // 100))))
    return requests


def fetch_all(url: str, requests: list[tuple[str, int]]) -> int:
    served = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        for endpoint, page in requests:
            response = client.get(f"/{endpoint}", params={"page": page, "size": 100})
            response.raise_for_status()
            served += len(response.json()["items"]) > 0
    return served


def pages_per_second(url: str, requests: list[tuple[str, int]], clients: int) -> float:
    chunks = [requests[i::clients] for i in range(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        served = sum(pool.map(lambda chunk: fetch_all(url, chunk), chunks))
    elapsed = time.perf_counter() - started
    assert served == len(requests), "some pages came back empty"
    return len(requests) / elapsed


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(users: int, requests: int, seed: int) -> dict[str, Any]:
    tracks = tracks_for(users)
    result: dict[str, Any] = {"users": users, "tracks": tracks}
    result["load_avg_1m_before"] = round(os.getloadavg()[0], 2)  # other work on the machine
    generation, render_ms = generation_and_render(users, tracks, seed)
    result["generation_s"] = round(generation, 3)
    result["render_ms_per_page"] = round(render_ms, 3)
    proc = SimulatorProcess(["--seed", str(seed), "--users", str(users), "--tracks", str(tracks)])
    try:
        url = proc.wait_ready(timeout_s=600)
        result["startup_s"] = round(proc.ready_after_s or 0.0, 3)
        result["server_rss_mb"] = rss_mb(proc.proc.pid)
        state = httpx.get(f"{url}/_admin/state", timeout=60).json()
        totals = state["totals"]
        result["listens"] = state["listens"]
        rng = random.Random(seed)
        fetch_all(url, plan(totals, 30, rng))  # warm-up
        sequential = plan(totals, requests, rng)
        concurrent = plan(totals, requests * 2, rng)
        result["sequential_pages_per_s"] = round(pages_per_second(url, sequential, 1), 1)
        result["concurrent_pages_per_s"] = round(pages_per_second(url, concurrent, CONCURRENCY), 1)
        result["concurrent_clients"] = CONCURRENCY
        result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    finally:
        proc.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1000,100000,1000000", help="users per run")
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")]
    runs = []
    for users in scales:
        print(f"simulator at {users:,} users ...", flush=True)
        runs.append(measure(users, args.requests, args.seed))
        print("  " + json.dumps(runs[-1]), flush=True)

    base = runs[0]
    metrics = (
        "generation_s",
        "render_ms_per_page",
        "startup_s",
        "sequential_pages_per_s",
        "concurrent_pages_per_s",
    )
    for run in runs:
        run["ratio_vs_baseline"] = {
            m: round(run[m] / base[m], 2) if base.get(m) else None for m in metrics
        }
    report = {
        "benchmark": "simulator",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "baseline_users": base["users"],
        "requests_sequential": args.requests,
        "requests_concurrent": args.requests * 2,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nratios vs {base['users']:,} users (wrote {args.out})")
    print(f"{'users':>10} {'gen s':>8} {'start s':>8} {'seq p/s':>9} {'8x p/s':>9}  ratios")
    for run in runs:
        r = run["ratio_vs_baseline"]
        print(
            f"{run['users']:>10,} {run['generation_s']:>8} {run['startup_s']:>8} "
            f"{run['sequential_pages_per_s']:>9} {run['concurrent_pages_per_s']:>9}  "
            f"gen x{r['generation_s']} start x{r['startup_s']} "
            f"seq x{r['sequential_pages_per_s']} conc x{r['concurrent_pages_per_s']}"
        )
    problems = [f"{run['users']:,} users: {p}" for run in runs for p in over_budget(run)]
    for problem in problems:
        print(f"OVER BUDGET {BUDGETS}: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
