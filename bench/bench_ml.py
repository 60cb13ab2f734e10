"""Benchmark of the recommender: the daily train path against bare implicit, each family's
quality on validation and test, and "play next".

One run, on one data set written into a scratch database `moovitamix_bench_ml` on the warehouse
in use (the embedded one by default), never into the real marts:

1. data: the API simulator's realistic world built day by day (`--data simulator`, the
   default: day 0, then `--days` days of evolution; each listen's time is the day its history
   version first held it, as marts.fct_listens has it: bench_recommenders.build/listens_of),
   or tests/ml/synthetic.py (`--data synthetic`), written as the input marts;
2. the baseline: bare implicit ALS of the config's [model] on the same CSR matrix (the same
   confidences): `fit` + `recommend(all users, filter_already_liked_items=True)`;
3. the train path without the search: `ml.train.run_training` with `selection.max_challengers=0`
   (read, split, validation of both baselines and the champion, its test report, refit on all
   data, save, play next, lists, publish), in the same process;
4. families, on the train path's own split: the config's [model] and each family of [search]
   at its defaults, fit on train and judged on validation, then refit on train + validation and
   judged on test: NDCG@10 with its paired-bootstrap interval, and the gain over the best
   baseline (popularity or genre popularity) on the same users;
5. "play next": ml.play_next's test report from the train path (hit@10 of each candidate on
   held-out next listens, with intervals, and the model published);
6. components on the served model: recommend-all, similar-all, play next, publish (best of
   `--repeat`).

`--copy` runs only the COPY comparison instead: the lists of `--copy-users` users (1M, 10 rows
each) written with psycopg's binary COPY (`write_row`, what ml.publish does) and with the numpy
binary codec ml.publish used before (kept here only to compare), same process, same table.

Goals: train path / bare implicit <= GOALS; publish >= 200k rows/s; the served model's test
NDCG@10 >= 2x popularity's; the published "play next" hit@10 above popularity's. Ratios
measured in one run compare across machines and loads better than seconds.

    .venv/bin/python bench/bench_ml.py            # 100k users x 50k tracks, 7 days
    .venv/bin/python bench/bench_ml.py --quick    # 10k x 5k, 3 days: smoke run
    .venv/bin/python bench/bench_ml.py --copy     # COPY of 10M list rows, both ways
"""

# ruff: noqa: E402  (the environment and sys.path first)
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads (see ml/__init__.py)
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # this checkout's packages, whatever else the path holds
    sys.path.insert(0, str(ROOT))

import argparse
import json
import platform
import resource
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import implicit
import numpy as np
import pandas as pd
import psycopg
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from psycopg import sql

from bench.bench_recommenders import build, listens_of
from ml import evaluate
from ml.baselines import GENRE_POPULARITY, POPULARITY
from ml.config import MlConfig, load_config
from ml.evaluate import EvaluationData, evaluate_baselines, evaluate_model
from ml.families.base import single_threaded_blas
from ml.families.factors import confidence, new_implicit
from ml.intervals import Interval, interval
from ml.lists import MODEL, UserTopTracks, build_lists
from ml.params import AlsParams, Params
from ml.publish import (
    USER_TOP_TRACKS,
    copy_rows,
    register_swap,
    similar_columns,
    stage,
    user_columns,
)
from ml.registry import load_model
from ml.train import (
    Inputs,
    TrainResult,
    evaluation_data,
    play_next_lists,
    read_inputs,
    run_training,
)
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import Publication, publish
from moovitamix.settings import apply_offline_defaults, load_settings
from moovitamix.warehouse import connect, open_warehouse
from simulator.generate import WorldSpec
from tests.ml.synthetic import SyntheticMarts, generate, write_marts

BENCH_DATABASE = "moovitamix_bench_ml"
RESULTS = ROOT / "bench" / "results" / "ml.json"
COPY_RESULTS = RESULTS.with_name("ml-copy.json")
QUICK = {"users": 10_000, "tracks": 5_000, "days": 3}
GOALS = {
    "train_over_bare": 1.25,
    "publish_rows_per_s": 200_000,
    "test_ndcg_served_over_popularity": 2.0,
    "play_next_hit_published_over_popularity": 1.0,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=7, help="simulated days after day 0")
    parser.add_argument("--quick", action="store_true", help="10k users x 5k tracks, 3 days")
    parser.add_argument("--data", choices=("simulator", "synthetic"), default="simulator")
    parser.add_argument("--clusters", type=int, default=4, help="scenes per genre (synthetic)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--override", action="append", default=[], help="ml config key")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each component (best)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--copy", action="store_true", help="only the COPY comparison")
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="only the daily train step (`python -m ml train`, the shipped config) in a child "
        "process: its seconds and peak memory",
    )
    parser.add_argument("--copy-users", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    args.out = args.out or (COPY_RESULTS if args.copy else RESULTS)
    if args.quick:
        args.users, args.tracks, args.days = QUICK["users"], QUICK["tracks"], QUICK["days"]
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
    print(f"  {name:<30} {seconds[name]:8.2f}s{best}", flush=True)
    return result


def interval_json(found: Interval) -> dict[str, float]:
    return {"mean": round(found.mean, 6), "low": round(found.low, 6), "high": round(found.high, 6)}


# --- data ------------------------------------------------------------------------------------


def simulator_marts(users: int, tracks: int, seed: int, days: int) -> SyntheticMarts:
    """The simulator's realistic world after `days` days as input marts: every listen of a
    living user and track, in history order, with its time."""
    b = build(WorldSpec(seed=seed, profile="realistic", users=users, tracks=tracks), days)
    listens = listens_of(b)
    user_id, track_id = b.users["id"].astype(np.int64), b.tracks["id"].astype(np.int64)
    alive_users, alive_tracks = np.flatnonzero(b.users["alive"]), np.flatnonzero(b.tracks["alive"])
    users_sorted = alive_users[np.argsort(user_id[alive_users])]
    tracks_sorted = alive_tracks[np.argsort(track_id[alive_tracks])]
    events = pd.DataFrame(
        {
            "user_id": user_id[listens["user"].to_numpy()],
            "track_id": track_id[listens["track"].to_numpy()],
        }
    )
    pairs = events.groupby(["user_id", "track_id"], sort=True).size()
    preferred = b.users["preferred"].astype(np.int64)
    genres = np.stack([b.tracks["g1"], b.tracks["g2"]], axis=1).astype(np.int64)
    return SyntheticMarts(
        user_ids=user_id[users_sorted],
        favorite_genre=preferred[users_sorted, 0],
        preferred=preferred[users_sorted],
        track_ids=track_id[tracks_sorted],
        track_genre=genres[tracks_sorted],
        listen_user=pairs.index.get_level_values(0).to_numpy(np.int64),
        listen_track=pairs.index.get_level_values(1).to_numpy(np.int64),
        listen_count=pairs.to_numpy(np.int32),
        event_user=events["user_id"].to_numpy(),
        event_track=events["track_id"].to_numpy(),
        event_at=listens["at"].to_numpy(np.int64),
    )


def make_marts(args: argparse.Namespace) -> SyntheticMarts:
    if args.data == "simulator":
        return simulator_marts(args.users, args.tracks, args.seed, args.days)
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
    params = config.model if isinstance(config.model, AlsParams) else AlsParams()
    weighted = confidence(matrix, params)
    als: AlternatingLeastSquares = new_implicit(params, config.runtime.num_threads)
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
        print(f"    {name:<28} {value:8.2f}s")
    return result


def family_candidates(config: MlConfig) -> list[tuple[str, Params]]:
    """The config's [model], then each searched family at its defaults (each params once)."""
    found = {config.model: "config [model]"}
    for family in config.search.families:
        found.setdefault(config.search.params(family, {}), f"{family} defaults")
    return [(name, params) for params, name in found.items()]


def families(data: EvaluationData, config: MlConfig, seconds: dict[str, float]) -> dict[str, Any]:
    """Each candidate on validation (fit on train) and on test (refit on train + validation,
    from its validation fit where the family can): NDCG@k with intervals, and the gains over
    the best baseline of each fold on the same users."""
    metric, threads = "ndcg", config.runtime.num_threads
    bootstrap = config.evaluation.bootstrap()
    baselines = evaluate_baselines(data)
    best = max(baselines, key=lambda name: baselines[name].score(metric))
    lists, _ = evaluate.lists_for_test(data, None)
    tested = evaluate.report_on_test(data, lists, metric, GENRE_POPULARITY)
    best_test = max(tested, key=lambda name: tested[name][metric]["mean"])
    out: dict[str, Any] = {
        "best_baseline": {"validation": best, "test": best_test},
        "baselines": {
            name: {
                "validation": interval_json(interval(scored.per_user[metric], **bootstrap)),
                "test": tested[name][metric],
            }
            for name, scored in baselines.items()
        },
        "candidates": {},
    }
    for name, params in family_candidates(config):
        started = time.perf_counter()
        scored, fitted = evaluate_model(data, params, name, threads)
        entry: dict[str, Any] = {"family": params.family, "params": params.label()}
        if scored.error is not None:
            out["candidates"][name] = {**entry, "error": scored.error}
            print(f"  {name:<30} {scored.error}", flush=True)
            continue
        lists, _ = evaluate.lists_for_test(data, (name, params, fitted), threads)
        del fitted
        report = evaluate.report_on_test(data, lists, metric, name)[name]
        out["candidates"][name] = {
            **entry,
            "validation": interval_json(interval(scored.per_user[metric], **bootstrap)),
            "validation_gain": interval_json(data.gain(scored, baselines[best], metric)),
            "test": report[metric],
            "test_gain": report[f"gain_vs_{best_test}"],
            "test_coverage": report["coverage"],
            "fit_seconds": round(scored.fit_seconds, 3),
        }
        seconds[f"family: {name}"] = round(time.perf_counter() - started, 3)
        print(f"  {name:<30} {seconds[f'family: {name}']:8.2f}s", flush=True)
    return out


def play_next_report(result: TrainResult) -> dict[str, Any]:
    """ml.play_next's test hit@k and MRR@k per candidate, from the serving model run's test
    report (ml.model_runs)."""
    serving = next(r for r in result.model_runs if r.model_run_id == result.serving_model_run_id)
    found = serving.metrics["test"]["play_next"]
    out: dict[str, Any] = {"published": found.get("model"), "candidates": {}}
    for key, value in found.items():
        parts = key.split("_")
        if parts[0] != "test" or parts[-1] not in ("hit", "mrr") or "vs" in parts:
            continue
        family, metric = "_".join(parts[1:-1]), parts[-1]
        out["candidates"].setdefault(family, {})[metric] = {
            "mean": round(value, 6),
            "low": round(found[f"{key}_lo"], 6),
            "high": round(found[f"{key}_hi"], 6),
        }
    return out


@dataclass
class Components:
    seconds: dict[str, float]
    rows: dict[str, int]


def components(
    url: ConnectionURL, inputs: Inputs, result: TrainResult, config: MlConfig, repeat: int
) -> Components:
    """recommend-all, similar-all, play next and publish again, on the served model, best of
    `repeat`."""
    seconds: dict[str, float] = {}
    assert result.artifact_path is not None, "no model served: nothing to time"
    model = load_model(result.artifact_path).model
    matrix, k = inputs.interactions.matrix, config.publish.k
    rows = np.arange(matrix.shape[0])
    timed(seconds, "recommend-all", lambda: model.recommend(rows, matrix, k), repeat)
    timed(seconds, "similar-all", lambda: model.similar(config.publish.similar_k), repeat)
    threads = config.runtime.num_threads
    play_next = timed(
        seconds,
        "play next (ml.play_next)",
        lambda: play_next_lists(inputs.sequences, inputs.tracks, config, threads),
    )
    users, similar_lists = build_lists(
        inputs.interactions, inputs.catalog, inputs.tracks, play_next, config.publish, model=model
    )

    def publish_again() -> dict[str, int]:
        """As `make train` publishes: staged, then swapped in by a publication of its own."""
        publication = Publication("bench", candidate="marts", swaps_postgres_marts=False)
        with connect(url, autocommit=True) as conn:
            parts = [user_columns(users)], [similar_columns(similar_lists)]
            rows = stage(conn, *parts, model_run_id="bench", generated_at=datetime.now(UTC))
        register_swap(publication, "bench", [])
        publish(url, publication, lock_timeout_s=config.publish.lock_timeout_s)
        return rows

    rows_published = timed(seconds, "publish (COPY + swap)", publish_again, repeat)
    return Components(seconds, rows_published)


# --- COPY: psycopg's write_row against the former numpy codec ----------------------------------


def numpy_binary_copy(
    conn: psycopg.Connection, table: str, lists: UserTopTracks, at: datetime
) -> None:
    """The former ml/pgcopy.py path: each block of rows one numpy structured array in COPY's
    binary tuple layout (int16 field count, then int32 length + big-endian value per field)."""
    epoch = (at - datetime(2000, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    fields = [("user_id", ">i8"), ("rank", ">i4"), ("track_id", ">i8"), ("score", ">f8")]
    fields += [("source", "S5"), ("model_run_id", "S5"), ("generated_at", ">i8")]
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
            block["source"], block["model_run_id"], block["generated_at"] = (
                b"model",
                b"bench",
                epoch,
            )
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


def ratios(
    seconds: dict[str, float],
    result: TrainResult,
    parts: Components,
    next_: dict[str, Any],
) -> dict[str, float]:
    rows = sum(result.rows_published.values())
    tested = result.test
    served = tested.get(MODEL, {}).get("ndcg", {}).get("mean", float("nan"))
    popularity_hit = next_["candidates"].get(POPULARITY, {}).get("hit", {}).get("mean")
    published_hit = next_["candidates"].get(next_["published"], {}).get("hit", {}).get("mean")
    return {
        "train_over_bare": seconds["train path (no search)"] / seconds["bare implicit total"],
        "publish_rows_per_s": rows / seconds["train: publish"],
        "publish_rows_per_s_best": sum(parts.rows.values())
        / parts.seconds["publish (COPY + swap)"],
        "test_ndcg_served_over_popularity": served / tested[POPULARITY]["ndcg"]["mean"],
        "test_ndcg_served_over_genre_popularity": served / tested[GENRE_POPULARITY]["ndcg"]["mean"],
        "play_next_hit_published_over_popularity": (
            published_hit / popularity_hit if published_hit and popularity_hit else float("nan")
        ),
    }


def _figure(found: dict[str, float] | None) -> str:
    if not found:
        return "-".rjust(26)
    return f"{found['mean']:.4f} [{found['low']:.4f}, {found['high']:.4f}]".rjust(26)


def print_report(
    found: dict[str, float], result: TrainResult, quality: dict[str, Any], next_: dict[str, Any]
) -> None:
    print("\nratio                                        measured     goal  met")
    for name, value in found.items():
        goal = GOALS.get(name)
        if goal is None:
            print(f"  {name:<42} {value:10.2f}")
            continue
        met = value <= goal if name.startswith("train_over_bare") else value >= goal
        print(f"  {name:<42} {value:10.2f} {goal:8g}  {'yes' if met else 'NO'}")
    best = quality["best_baseline"]
    print(
        f"\nNDCG@{result.k}, {result.split} split; gains over the best baseline "
        f"({best['validation']} on validation, {best['test']} on test), same users"
    )
    print(f"  {'':<20}{'validation':>26}{'gain':>26}{'test':>26}{'gain':>26}")
    for name, entry in quality["baselines"].items():
        print(f"  {name:<20}{_figure(entry['validation'])}{'':>26}{_figure(entry['test'])}")
    for name, entry in quality["candidates"].items():
        if "error" in entry:
            print(f"  {name:<20}  {entry['error']}")
            continue
        cells = [entry[key] for key in ("validation", "validation_gain", "test", "test_gain")]
        print(f"  {name:<20}{''.join(map(_figure, cells))}")
    print(f"  served by the train path: {result.source} ({result.reason})")
    print(f"\nplay next, test hit@{result.k} (published: {next_['published']})")
    for name, entry in next_["candidates"].items():
        print(f"  {name:<20}{_figure(entry.get('hit'))}  mrr {_figure(entry.get('mrr'))}")


def result_json(
    args: argparse.Namespace,
    config: MlConfig,
    inputs: Inputs,
    seconds: dict[str, float],
    result: TrainResult,
    parts: Components,
    quality: dict[str, Any],
    next_: dict[str, Any],
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
            "num_threads": config.runtime.num_threads,
        },
        "data": {
            "source": args.data,
            "days": args.days if args.data == "simulator" else None,
            "users": interactions.n_users,
            "dim_users": len(inputs.catalog.user_ids),
            "tracks": interactions.n_tracks,
            "interactions": interactions.n_interactions,
            "seed": args.seed,
        },
        "params": config.model.to_json(),
        "split": {"kind": result.split, **result.model_runs[0].metrics.get("split", {})},
        "seconds": {**seconds, **parts.seconds},
        "components_repeat": f"best of {args.repeat}",
        "rows_published": result.rows_published,
        "train_decision": result.reason,
        "served": result.source,
        "ratios": {name: round(value, 3) for name, value in found.items()},
        "goals": GOALS,
        "train_path_test": {
            name: {m: report[m] for m in ("precision", "recall", "map", "ndcg") if m in report}
            for name, report in result.test.items()
            if name != "play_next"
        },
        "families_ndcg_at_k": quality,
        "play_next": next_,
        "definitions": {
            "train_over_bare": "run_training(max_challengers=0) wall time / (bare implicit ALS "
            "fit + implicit recommend(all users, filter_already_liked_items=True)) on the same "
            "matrix, same process; the train path also judges on validation and test, picks "
            "play next and publishes",
            "publish_rows_per_s": "rows of both tables / the train path's publish step (COPY, "
            "primary keys, analyze, model runs, swap, commit)",
            "metrics": "ml/README.md: precision = hits/k, recall = hits/held-out tracks, map "
            "and ndcg as implicit's, means over the judged users of ml.split's fold; intervals: "
            "95% paired percentile bootstrap over those users (ml.intervals); gain: the "
            "candidate minus the fold's best baseline on the same users; play next: hit@k and "
            "MRR@k of the last listen of each history after its second-to-last (ml.play_next)",
        },
    }


def train_command(url: ConnectionURL, scratch: Path, overrides: list[str]) -> dict[str, Any]:
    """`python -m ml train` on the scratch marts, as the daily run's step does it (the shipped
    config and its challengers), in a child process: wall seconds, peak RSS, its summary."""
    env = {
        **os.environ,
        "WAREHOUSE_URL": url.url(),
        "MOOVITAMIX_DATA_DIR": str(scratch / "data"),
        "MOOVITAMIX_LOGS_DIR": str(scratch / "logs"),
    }
    command = [sys.executable, "-m", "ml", "train", "-o", f"artifacts.root={scratch}"]
    command += [part for o in overrides for part in ("-o", o)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise RuntimeError(f"ml train failed ({done.returncode}): {done.stderr[-2000:]}")
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024),
        "summary": done.stdout.strip().splitlines()[-1],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    apply_offline_defaults()
    if args.train_only:
        return train_only(args)
    if args.copy:
        url = open_warehouse(load_settings()).with_database(BENCH_DATABASE)
        open_warehouse(load_settings({"WAREHOUSE_URL": url.url()}))  # creates it
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
    open_warehouse(load_settings({"WAREHOUSE_URL": url.url()}))  # creates it, roles and schemas
    seconds: dict[str, float] = {}
    days = f", {args.days} days" if args.data == "simulator" else ""
    print(f"bench_ml: {args.data} data, {args.users:,} users x {args.tracks:,} tracks{days}")
    print(f"  params {config.model.label()}, threads {config.runtime.num_threads}")
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
        print("families (validation, then test):")
        quality = families(evaluation_data(inputs, config), config, seconds)
    finally:
        if not args.keep:
            drop_database(url)
    next_ = play_next_report(result)
    found = ratios(seconds, result, parts, next_)
    print_report(found, result, quality, next_)
    out = result_json(args, config, inputs, seconds, result, parts, quality, next_, found)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.out}")
    return 0


def write_scratch(url: ConnectionURL, marts: SyntheticMarts) -> None:
    with connect(url) as conn:
        write_marts(conn, marts)


def train_only(args: argparse.Namespace) -> int:
    """The scratch marts, then the train step alone in a child process (see `--train-only`)."""
    url = open_warehouse(load_settings()).with_database(BENCH_DATABASE)
    open_warehouse(load_settings({"WAREHOUSE_URL": url.url()}))  # creates it, roles and schemas
    scratch = Path(tempfile.mkdtemp(prefix="bench-ml-"))
    seconds: dict[str, float] = {}
    print(f"bench_ml --train-only: {args.users:,} users x {args.tracks:,} tracks")
    try:
        marts = timed(seconds, "generate", lambda: make_marts(args))
        timed(seconds, "write marts", lambda: write_scratch(url, marts))
        found = train_command(url, scratch, args.override)
    finally:
        if not args.keep:
            drop_database(url)
    print(f"  train: {found['seconds']} s, peak RSS {found['peak_rss_mb']:,} MB")
    print(f"  {found['summary']}")
    out = {
        "benchmark": "ml-train-only",
        "users": args.users,
        "tracks": args.tracks,
        "days": args.days,
        "overrides": args.override,
        "seconds": seconds,
        "train": found,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    path = args.out.with_name(f"ml-train-{args.users}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
