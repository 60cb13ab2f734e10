"""Benchmark of the recommender at scale: fit, recommend, similar, build lists, publish.

Synthetic marts shaped like the simulator's (ml.synthetic) are written into a scratch database
`moovitamix_bench_ml` on the warehouse in use (the embedded one by default), never into the
real marts. Times are reported in seconds and as ratios to a reference measured in the same
run on the same data: the popularity baseline's top-k for every user. Ratios compare across
machines and loads better than seconds. Results: bench/results/ml.json.

    .venv/bin/python bench/bench_ml.py                 # 100k users x 20k tracks
    .venv/bin/python bench/bench_ml.py --users 5000 --tracks 2000 --quick
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (see ml/__init__.py)

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import implicit
import numpy as np
import psycopg
from psycopg import sql

from ml.baselines import Popularity
from ml.config import ModelParams, load_config
from ml.evaluate import (
    EvaluationData,
    evaluate_baselines,
    evaluate_model,
    leave_k_out,
)
from ml.interactions import load_catalog, load_interactions
from ml.lists import similar_tracks, user_top_tracks
from ml.model import fit, recommend, similar, single_threaded_blas
from ml.publish import publish
from ml.synthetic import generate, write_marts
from ml.train import Inputs
from moovitamix.settings import apply_offline_defaults, load_settings
from moovitamix.warehouse import (
    connect,
    ensure_database,
    ensure_schemas,
    open_warehouse,
)

BENCH_DATABASE = "moovitamix_bench_ml"
RESULTS = Path(__file__).resolve().parent / "results" / "ml.json"


def timed(seconds: dict[str, float], name: str, func, *args, repeat: int = 1, **kwargs):
    """Run func `repeat` times; record the fastest (the machine's noise only ever adds)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = func(*args, **kwargs)
        times.append(time.perf_counter() - started)
    seconds[name] = round(min(times), 3)
    print(
        f"  {name:<22} {seconds[name]:8.2f}s" + (f"  (best of {repeat})" if repeat > 1 else ""),
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--clusters", type=int, default=1, help="scenes per genre (1 = the simulator's structure)"
    )
    parser.add_argument("-o", "--override", action="append", default=[], help="ml config key")
    parser.add_argument("--quick", action="store_true", help="skip the holdout evaluation")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each step but fit and evaluation (best)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    apply_offline_defaults()

    config = load_config(overrides=args.override)
    params: ModelParams = config.model
    threads = config.runtime.num_threads
    k = config.publish.k
    url = open_warehouse(load_settings()).with_database(BENCH_DATABASE)
    ensure_database(url)
    ensure_schemas(url)
    seconds: dict[str, float] = {}
    print(f"bench_ml: {args.users:,} users x {args.tracks:,} tracks, {params.label()}")

    marts = timed(
        seconds,
        "generate",
        generate,
        args.users,
        args.tracks,
        args.seed,
        clusters_per_genre=args.clusters,
    )

    def write() -> None:
        with connect(url) as conn:
            write_marts(conn, marts)

    timed(seconds, "write marts", write)

    def read() -> Inputs:
        with connect(url) as conn:
            interactions = load_interactions(conn)
            return Inputs(interactions, load_catalog(conn, interactions), None)

    inputs = timed(seconds, "read marts (COPY)", read)
    interactions = inputs.interactions
    matrix = interactions.matrix
    metrics: dict[str, dict[str, float]] = {}
    with single_threaded_blas():
        popularity = Popularity(matrix, inputs.catalog.track_genres)
        timed(
            seconds,
            "popularity top-k",
            popularity.recommend,
            k,
            heard=matrix,
            favorite_genre=inputs.favorite_genre_of_rows(),
            repeat=args.repeat,
        )
        fitted = timed(seconds, "fit", fit, matrix, params, threads)
        rows = np.arange(interactions.n_users)
        timed(
            seconds,
            "recommend all users",
            recommend,
            fitted.als,
            rows,
            matrix,
            k,
            repeat=args.repeat,
        )
        timed(
            seconds,
            "similar all tracks",
            similar,
            fitted.als,
            config.publish.similar_k,
            repeat=args.repeat,
        )

        def build():
            users = user_top_tracks(interactions, inputs.catalog, popularity, k, als=fitted.als)
            tracks = similar_tracks(
                interactions, inputs.catalog, popularity, config.publish.similar_k, als=fitted.als
            )
            return users, tracks

        user_lists, similar_lists = timed(seconds, "build lists", build, repeat=args.repeat)

        def publish_lists() -> dict[str, int]:
            with connect(url, autocommit=True) as conn:
                return publish(
                    conn,
                    user_lists,
                    similar_lists,
                    model_run_id="bench",
                    generated_at=datetime.now(UTC),
                    model_runs=[],
                    lock_timeout_s=config.publish.lock_timeout_s,
                )

        published = timed(seconds, "publish (COPY + swap)", publish_lists, repeat=args.repeat)
        if not args.quick:
            holdout = leave_k_out(matrix, config.evaluation)
            data = EvaluationData(
                holdout,
                inputs.favorite_genre_of_rows(),
                inputs.catalog.track_genres,
                inputs.catalog.n_catalog_tracks,
                config.evaluation.k,
            )
            baselines = timed(seconds, "evaluate baselines", evaluate_baselines, data)
            scored, _ = timed(seconds, "evaluate ALS", evaluate_model, data, params, "als", threads)
            metrics = {name: s.metrics for name, s in baselines.items()} | {"als": scored.metrics}

    if not args.keep:
        admin = url.with_database("postgres")
        with connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(
                    sql.Identifier(BENCH_DATABASE)
                )
            )

    reference = seconds["popularity top-k"]
    ratios = {
        name: round(seconds[name] / reference, 2)
        for name in (
            "fit",
            "recommend all users",
            "similar all tracks",
            "build lists",
            "publish (COPY + swap)",
        )
    }
    result = {
        "benchmark": "ml",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "implicit": implicit.__version__,
            "numpy": np.__version__,
            "psycopg": psycopg.__version__,
            "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "als_num_threads": threads,
        },
        "data": {
            "users": interactions.n_users,
            "dim_users": len(marts.user_ids),
            "tracks": interactions.n_tracks,
            "interactions": interactions.n_interactions,
            "scenes_per_genre": args.clusters,
            "seed": args.seed,
        },
        "params": params.to_json(),
        "rows_published": published,
        "reference": (
            "the favorite-genre popularity baseline's top-k for every user with listens, "
            "already-heard tracks excluded (ml.baselines)"
        ),
        "seconds": seconds,
        "repeat": f"best of {args.repeat} for every step but generate, write, read, fit, evaluate",
        "ratio_to_reference": ratios,
        "metrics_at_k": metrics,
        "metric_definitions": (
            "precision = hits/k; recall = hits/held-out tracks of the user (implicit's "
            "'precision'); map, ndcg as implicit; coverage = distinct recommended tracks / "
            "dim_tracks; macro-averaged over evaluated users"
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"ratios to the popularity top-k ({reference:.2f}s): {ratios}")
    if metrics:
        for name, values in metrics.items():
            print(f"  {name:<18} ndcg@{k} {values['ndcg']:.4f}  recall@{k} {values['recall']:.4f}")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
