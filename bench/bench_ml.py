"""Benchmark of the recommender: the daily train path against bare implicit, and list quality.

One run, on one data set written into a scratch database `moovitamix_bench_ml` on the warehouse
in use (the embedded one by default), never into the real marts:

1. data: the API simulator's own realistic generator (`--data simulator`, the default: genres,
   Zipf popularity and 4 "scenes" per genre, day 0), or tests/ml/synthetic.py (`--data synthetic`),
   written as the five input marts;
2. the baseline: bare implicit on the same CSR matrix (the same confidences and parameters):
   `AlternatingLeastSquares.fit` + `recommend(all users, filter_already_liked_items=True)`;
3. the train path without the hyper-parameter search: `ml.train.run_training` with
   `selection.max_challengers=0` (read, holdout evaluation of both baselines and the champion,
   refit on all data, save, build lists, publish), in the same process and the same run;
4. components on the served model: recommend-all, similar-all (the configured scoring, and
   the other one for comparison), publish (best of `--repeat`);
5. quality on the train path's own holdout: NDCG@10 of ALS and both baselines, and `next_hit`
   of the "play next" lists against both baselines (recorded by the train path in the
   champion's metrics); and, from a fit on the training split, next_hit of both scorings.

`--copy` runs only the COPY comparison instead: the lists of `--copy-users` users (1M, 10 rows
each) written with psycopg's binary COPY (`write_row`, what ml.publish does) and with the numpy
binary codec ml.publish used before (kept here only to compare), same process, same table.

Goals: train path / bare implicit <= 1.25; publish >= 200k rows/s; ALS NDCG@10 >= 2x
popularity; and the published "play next" lists' next_hit above both baselines'. Ratios measured
in one run compare across machines and loads better than seconds.

    .venv/bin/python bench/bench_ml.py            # 100k users x 50k tracks, ~1.9M pairs
    .venv/bin/python bench/bench_ml.py --quick    # 10k x 5k smoke run
    .venv/bin/python bench/bench_ml.py --copy     # COPY of 10M list rows, both ways
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (see ml/__init__.py)

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import implicit
import numpy as np
import psycopg
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from psycopg import sql

from ml.config import SIMILAR_SCORINGS, MlConfig, load_config
from ml.evaluate import NEXT_HIT, model_next_hit
from ml.lists import UserTopTracks, build_lists
from ml.model import confidence, fit, new_als, recommend, similar, single_threaded_blas
from ml.publish import USER_TOP_TRACKS, copy_rows, publish, user_columns
from ml.registry import load_model
from ml.train import Inputs, TrainResult, evaluation_data, read_inputs, run_training
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import apply_offline_defaults, load_settings
from moovitamix.warehouse import connect, ensure_database, ensure_schemas, open_warehouse
from simulator.evolve import build_world
from simulator.generate import WorldSpec
from tests.ml.synthetic import SyntheticMarts, generate, write_marts

BENCH_DATABASE = "moovitamix_bench_ml"
RESULTS = Path(__file__).resolve().parent / "results" / "ml.json"
COPY_RESULTS = RESULTS.with_name("ml-copy.json")
QUICK = {"users": 10_000, "tracks": 5_000}
GOALS = {
    "train_over_bare": 1.25,
    "publish_rows_per_s": 200_000,
    "ndcg_als_over_popularity": 2.0,
    "next_hit_als_over_popularity": 1.0,
    "next_hit_als_over_genre_popularity": 1.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="10k users x 5k tracks (smoke run)")
    parser.add_argument("--data", choices=("simulator", "synthetic"), default="simulator")
    parser.add_argument("--clusters", type=int, default=4, help="scenes per genre (synthetic)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--override", action="append", default=[], help="ml config key")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each component (best)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--copy", action="store_true", help="only the COPY comparison")
    parser.add_argument("--copy-users", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    args.out = args.out or (COPY_RESULTS if args.copy else RESULTS)
    if args.quick:
        args.users, args.tracks = QUICK["users"], QUICK["tracks"]
    return args


def timed(seconds: dict[str, float], name: str, func: Callable[[], Any], repeat: int = 1) -> Any:
    """Run func `repeat` times; record the fastest (the machine's noise only ever adds)."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - started)
    seconds[name] = round(min(times), 3)
    best = f"  (best of {repeat})" if repeat > 1 else ""
    print(f"  {name:<28} {seconds[name]:8.2f}s{best}", flush=True)
    return result


# --- data ------------------------------------------------------------------------------------


def simulator_marts(users: int, tracks: int, seed: int) -> SyntheticMarts:
    """The simulator's realistic day-0 world as input marts (listen events -> counts)."""
    world = build_world(WorldSpec(seed=seed, profile="realistic", users=users, tracks=tracks), 0)
    u, t = world.users, world.tracks
    per_user = np.diff(world.listens.offsets)
    owner = np.repeat(np.arange(u.n, dtype=np.int64), per_user)
    keys, counts = np.unique(owner * t.n + world.listens.items, return_counts=True)
    preferred = u["preferred"].astype(np.int64)
    user_ids, track_ids = u["id"].astype(np.int64), t["id"].astype(np.int64)
    user_order, track_order = np.argsort(user_ids), np.argsort(track_ids)
    return SyntheticMarts(
        user_ids=user_ids[user_order],
        favorite_genre=preferred[user_order, 0],
        preferred=preferred[user_order],
        track_ids=track_ids[track_order],
        track_genre=np.stack([t["g1"], t["g2"]], axis=1).astype(np.int64)[track_order],
        listen_user=user_ids[keys // t.n],
        listen_track=track_ids[keys % t.n],
        listen_count=counts.astype(np.int32),
    )


def make_marts(args: argparse.Namespace) -> SyntheticMarts:
    if args.data == "simulator":
        return simulator_marts(args.users, args.tracks, args.seed)
    return generate(args.users, args.tracks, args.seed, clusters_per_genre=args.clusters)


def drop_database(url: ConnectionURL) -> None:
    with connect(url.with_database("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(
                sql.Identifier(BENCH_DATABASE)
            )
        )


# --- the measurements ------------------------------------------------------------------------


def bare_implicit(matrix: sp.csr_matrix, config: MlConfig, seconds: dict[str, float]) -> None:
    """implicit alone on the same matrix: fit, then its own filtered recommend for all users.
    The confidences are computed beforehand, outside the clock (in the baseline's favour)."""
    weighted = confidence(matrix, config.model)
    als: AlternatingLeastSquares = new_als(config.model, config.runtime.num_threads)
    users = np.arange(matrix.shape[0])
    with single_threaded_blas():
        timed(seconds, "bare implicit fit", lambda: als.fit(weighted, show_progress=False))
        timed(
            seconds,
            "bare implicit recommend-all",
            lambda: als.recommend(users, matrix, N=config.publish.k),
        )
    seconds["bare implicit total"] = round(
        seconds["bare implicit fit"] + seconds["bare implicit recommend-all"], 3
    )


def train_path(url: ConnectionURL, config: MlConfig, seconds: dict[str, float]) -> TrainResult:
    """`make train` without the search: run_training with max_challengers=0."""
    settings = load_settings()
    result: TrainResult = timed(
        seconds,
        "train path (no search)",
        lambda: run_training(
            settings, "bench", config=config, warehouse=url, champion_from_config=True
        ),
    )
    for name, value in result.timings.items():
        seconds[f"train: {name}"] = value
        print(f"    {name:<26} {value:8.2f}s")
    return result


@dataclass
class Components:
    seconds: dict[str, float]
    rows: dict[str, int]


def components(
    url: ConnectionURL, inputs: Inputs, result: TrainResult, config: MlConfig, repeat: int
) -> Components:
    """recommend-all, similar-all and publish again, on the served model, best of `repeat`."""
    seconds: dict[str, float] = {}
    assert result.artifact_path is not None, "ALS did not serve: no model to time"
    als = load_model(result.artifact_path).als
    matrix, k = inputs.interactions.matrix, config.publish.k
    rows = np.arange(matrix.shape[0])
    timed(seconds, "recommend-all (ml.topk)", lambda: recommend(als, rows, matrix, k), repeat)
    scoring = config.publish.similar_scoring
    for other in (scoring, *(s for s in SIMILAR_SCORINGS if s != scoring)):
        timed(
            seconds,
            f"similar-all ({other})",
            lambda other=other: similar(als, config.publish.similar_k, other),
            repeat,
        )
    users, similar_lists = build_lists(inputs.interactions, inputs.catalog, config.publish, als=als)

    def publish_again() -> dict[str, int]:
        with connect(url, autocommit=True) as conn:
            return publish(
                conn,
                users,
                similar_lists,
                model_run_id="bench",
                generated_at=datetime.now(UTC),
                model_runs=[],
                lock_timeout_s=config.publish.lock_timeout_s,
            )

    rows_published = timed(seconds, "publish (COPY + swap)", publish_again, repeat)
    return Components(seconds, rows_published)


def quality(inputs: Inputs, config: MlConfig, seconds: dict[str, float]) -> dict[str, float]:
    """next_hit of both similar scorings from a fit on the training split (the train path
    records only the configured one)."""
    data = evaluation_data(inputs, config)
    fitted = timed(
        seconds,
        "fit on the training split",
        lambda: fit(data.holdout.train, config.model, config.runtime.num_threads),
    )
    return {
        f"{NEXT_HIT}_als_{scoring}": timed(
            seconds,
            f"next_hit ({scoring})",
            lambda scoring=scoring: model_next_hit(data, fitted, scoring),
        )
        for scoring in SIMILAR_SCORINGS
    }


# --- COPY: psycopg's write_row against the former numpy codec ----------------------------------


def numpy_binary_copy(
    conn: psycopg.Connection, table: str, lists: UserTopTracks, at: datetime
) -> None:
    """The former ml/pgcopy.py path: each block of rows one numpy structured array in COPY's
    binary tuple layout (int16 field count, then int32 length + big-endian value per field)."""
    epoch = (at - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    fields = [("user_id", ">i8"), ("rank", ">i4"), ("track_id", ">i8"), ("score", ">f8")]
    fields += [("source", "S3"), ("model_run_id", "S5"), ("generated_at", ">i8")]
    dtype = np.dtype([("n", ">i2")] + [x for f in fields for x in ((f"len_{f[0]}", ">i4"), f)])
    with conn.cursor() as cur, cur.copy(f"copy {table} from stdin (format binary)") as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
        for start in range(0, len(lists.user_id), 250_000):
            part = slice(start, start + 250_000)
            block = np.empty(len(lists.user_id[part]), dtype=dtype)
            block["n"] = len(fields)
            for name, fmt in fields:
                block[f"len_{name}"] = np.dtype(fmt).itemsize
            for name in ("user_id", "rank", "track_id", "score"):
                block[name] = getattr(lists, name)[part]
            block["source"], block["model_run_id"], block["generated_at"] = b"als", b"bench", epoch
            copy.write(block.tobytes())
        copy.write(b"\xff\xff")


def copy_bench(url: ConnectionURL, n_users: int, repeat: int) -> dict[str, Any]:
    """user_top_tracks of `n_users` users (10 rows each) COPYed both ways into a fresh table."""
    n = n_users * 10
    rng = np.random.default_rng(0)
    lists = UserTopTracks(
        user_id=np.repeat(np.arange(n_users, dtype=np.int64), 10),
        rank=np.tile(np.arange(1, 11, dtype=np.int32), n_users),
        track_id=rng.integers(1, 10**6, n),
        score=rng.random(n),
        source=np.zeros(n, dtype=np.int8),
    )
    at = datetime.now(UTC)
    columns = ", ".join(f"{name} {kind} not null" for name, kind in USER_TOP_TRACKS.columns)
    seconds: dict[str, float] = {}

    def run(write: Callable[[psycopg.Connection], None]) -> Callable[[], int]:
        def once() -> int:
            with connect(url, autocommit=True) as conn:
                conn.execute(
                    f"drop table if exists copy_bench; create table copy_bench ({columns})"
                )
                write(conn)
                (rows,) = conn.execute("select count(*) from copy_bench").fetchone() or (0,)
                conn.execute("drop table copy_bench")
            return int(rows)

        return once

    def psycopg_write_row(conn: psycopg.Connection) -> None:
        with conn.cursor() as cur, cur.copy("copy copy_bench from stdin (format binary)") as copy:
            copy.set_types([kind for _, kind in USER_TOP_TRACKS.columns])
            for row in copy_rows([user_columns(lists)], "bench", at):
                copy.write_row(row)

    print(f"COPY of {n:,} user_top_tracks rows ({n_users:,} users), best of {repeat}")
    rows = {
        "numpy binary codec (former ml/pgcopy.py)": timed(
            seconds,
            "numpy binary codec",
            run(lambda c: numpy_binary_copy(c, "copy_bench", lists, at)),
            repeat,
        ),
        "psycopg write_row (ml.publish)": timed(
            seconds, "psycopg write_row", run(psycopg_write_row), repeat
        ),
    }
    assert set(rows.values()) == {n}, rows
    saved = seconds["psycopg write_row"] - seconds["numpy binary codec"]
    share = saved / seconds["psycopg write_row"]
    print(f"  the numpy codec saves {saved:.1f}s per {n:,} rows ({share:.0%})")
    return {
        "benchmark": "ml-copy",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        },
        "rows": n,
        "seconds": seconds,
        "repeat": f"best of {repeat}",
        "numpy_codec_saves_s": round(saved, 2),
        "definitions": "seconds: one COPY of the rows into a fresh table (create, copy, count), "
        "psycopg's binary COPY with set_types + write_row per row (ml.publish) vs the numpy "
        "structured-array encoder ml/pgcopy.py had",
    }


# --- the report ------------------------------------------------------------------------------


def play_next(result: TrainResult, quality_: dict[str, float]) -> dict[str, float]:
    """next_hit of the published lists (the train path's champion metrics) and baselines."""
    found = {key: value for key, value in result.metrics.items() if key.startswith(NEXT_HIT)}
    return {**found, **quality_}


def ratios(
    seconds: dict[str, float], result: TrainResult, parts: Components, next_hit: dict[str, float]
) -> dict[str, float]:
    rows = sum(result.rows_published.values())
    ndcg = {name: m["ndcg"] for name, m in result.baseline_metrics.items()}
    als_ndcg = result.metrics["ndcg"] if result.source == "als" else float("nan")
    published = next_hit.get(NEXT_HIT, float("nan"))
    return {
        "train_over_bare": seconds["train path (no search)"] / seconds["bare implicit total"],
        "publish_rows_per_s": rows / seconds["train: publish"],
        "publish_rows_per_s_best": sum(parts.rows.values())
        / parts.seconds["publish (COPY + swap)"],
        "ndcg_als_over_popularity": als_ndcg / ndcg["popularity"],
        "ndcg_als_over_genre_popularity": als_ndcg / ndcg["genre_popularity"],
        "next_hit_als_over_popularity": published / next_hit[f"{NEXT_HIT}_popularity"],
        "next_hit_als_over_genre_popularity": published / next_hit[f"{NEXT_HIT}_genre_popularity"],
    }


def print_report(found: dict[str, float], result: TrainResult, quality_: dict[str, float]) -> None:
    print("\nratio                                  measured     goal  met")
    for name, value in found.items():
        goal = GOALS.get(name)
        if goal is None:
            print(f"  {name:<36} {value:10.2f}")
            continue
        met = value <= goal if name.startswith("train_over_bare") else value >= goal
        print(f"  {name:<36} {value:10.2f} {goal:8g}  {'yes' if met else 'NO'}")
    print(f"\nholdout metrics @{result.k} (train path; served: {result.source})")
    rows = {**result.baseline_metrics, "als": result.metrics}
    for name, m in rows.items():
        print(f"  {name:<18} ndcg {m['ndcg']:.4f}  map {m['map']:.4f}  recall {m['recall']:.4f}")
    print(
        "  play-next lists, next_hit@k: " + ", ".join(f"{n} {v:.4f}" for n, v in quality_.items())
    )


def result_json(
    args: argparse.Namespace,
    config: MlConfig,
    inputs: Inputs,
    seconds: dict[str, float],
    result: TrainResult,
    parts: Components,
    quality_: dict[str, float],
    found: dict[str, float],
) -> dict[str, Any]:
    interactions = inputs.interactions
    return {
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
            "als_num_threads": config.runtime.num_threads,
        },
        "data": {
            "source": args.data,
            "users": interactions.n_users,
            "dim_users": len(inputs.catalog.user_ids),
            "tracks": interactions.n_tracks,
            "interactions": interactions.n_interactions,
            "seed": args.seed,
        },
        "params": config.model.to_json(),
        "similar_scoring": config.publish.similar_scoring,
        "seconds": {**seconds, **parts.seconds},
        "components_repeat": f"best of {args.repeat}",
        "rows_published": result.rows_published,
        "train_decision": result.reason,
        "served": result.source,
        "ratios": {name: round(value, 3) for name, value in found.items()},
        "goals": GOALS,
        "metrics_at_k": {**result.baseline_metrics, "als": result.metrics},
        "next_track_at_k": quality_,
        "definitions": {
            "train_over_bare": "run_training(max_challengers=0) wall time / (bare implicit fit "
            "+ implicit recommend(all users, filter_already_liked_items=True)) on the same "
            "matrix, same process",
            "publish_rows_per_s": "rows of both tables / the train path's publish step (COPY, "
            "primary keys, analyze, model runs, swap, commit)",
            "metrics": "ml/README.md: precision = hits/k, recall = hits/held-out tracks, map "
            "and ndcg as implicit's, macro over evaluated users; next_hit: share of a user's "
            "training tracks whose similar list holds one of their held-out tracks; next_hit: "
            "the published scoring's, recorded by the train path; next_hit_als_<scoring>: "
            "from a separate fit on the same training split",
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    if args.copy:
        url = open_warehouse(load_settings()).with_database(BENCH_DATABASE)
        ensure_database(url)
        try:
            found = copy_bench(url, args.copy_users, args.repeat)
        finally:
            if not args.keep:
                drop_database(url)
        args.out.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
        print(f"results: {args.out}")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="bench-ml-"))
    overrides = [
        *args.override,
        "selection.max_challengers=0",
        f"artifacts.root={scratch}",
        "artifacts.keep=1",
    ]
    config = load_config(overrides=overrides)
    url = open_warehouse(load_settings()).with_database(BENCH_DATABASE)
    ensure_database(url)
    ensure_schemas(url)
    seconds: dict[str, float] = {}
    print(f"bench_ml: {args.data} data, {args.users:,} users x {args.tracks:,} tracks")
    print(
        f"  params {config.model.label()}, similar by {config.publish.similar_scoring}, "
        f"threads {config.runtime.num_threads}"
    )
    try:
        marts = timed(seconds, "generate", lambda: make_marts(args))

        def write() -> None:
            with connect(url) as conn:
                write_marts(conn, marts)

        timed(seconds, "write marts", write)
        inputs = timed(seconds, "load (read_inputs)", lambda: read_inputs(url))
        print(f"  {inputs.interactions.n_interactions:,} (user, track) pairs")
        bare_implicit(inputs.interactions.matrix, config, seconds)
        result = train_path(url, config, seconds)
        print(f"  decision: {result.reason}")
        parts = components(url, inputs, result, config, args.repeat)
        quality_ = play_next(result, quality(inputs, config, seconds))
    finally:
        if not args.keep:
            drop_database(url)
    found = ratios(seconds, result, parts, quality_)
    print_report(found, result, quality_)
    out = result_json(args, config, inputs, seconds, result, parts, quality_, found)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
