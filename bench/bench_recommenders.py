"""Benchmark of the recommender families and the "play next" models on the simulator's data.

    python bench/bench_recommenders.py [--users 100000] [--tracks 20000] [--days 14]
        [--seeds 1,2,3] [--profiles realistic,reference] [--grid 2]

For each profile and seed, the simulator's world is built in-process day by day (day 0, then
`--days` days of evolution), and turned into what the marts hold: each listen's time is the day
its history version first held it (so day-0 listens share one time and the later days' listens
carry theirs, as in marts.fct_listens), listens of deleted users or tracks dropped. Then, with
ml/'s own code and ml/config.toml's settings:

- the split ml.split chooses (time, or the per-user holdout) and why;
- every family of [search] (its defaults and `--grid` grid points, plus implicit's last.fm ALS)
  fit on train and scored on validation; each family's best refit on train + validation and
  scored on test (NDCG@10 with its 95% paired-bootstrap interval, per segment, coverage,
  novelty, diversity), with both popularity baselines;
- the daily rule (ml.selection.decide, the config's [model] as champion) run on those
  candidates: which family it would publish, and its test gain over the last.fm ALS;
- with `--holdout-too`, the same on ml.split's per-user holdout (what the time split changes);
- "play next" (ml.play_next): transitions, co-occurrence, blend, item-item and popularity on
  held-out next listens (hit@10, MRR@10 with intervals).

Results go to bench/results/recommenders.json, and a Markdown summary is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ml.config import MlConfig, load_config  # noqa: E402
from ml.evaluate import (  # noqa: E402
    EvaluationData,
    Scored,
    evaluate_baselines,
    evaluate_model,
    lists_for_test,
    report_on_test,
)
from ml.families.base import single_threaded_blas  # noqa: E402
from ml.interactions import Interactions, build_interactions, catalog_from_frames  # noqa: E402
from ml.params import LASTFM_ALS, Params  # noqa: E402
from ml.selection import decide  # noqa: E402
from ml.sequences import build_sequences, track_features  # noqa: E402
from ml.split import split  # noqa: E402
from ml.train import play_next_lists  # noqa: E402
from simulator.evolve import apply_day, daily_new_counts  # noqa: E402
from simulator.generate import WorldBuilder, WorldSpec, generate_initial  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "recommenders.json"


def build(spec: WorldSpec, days: int) -> WorldBuilder:
    """The world of day `days`, built as simulator.evolve.build_world builds it, with the time
    the history versions got their listens in `b.events["stamps"]`: day 0's per user, then
    per appended event the `updated_at` of its users' new versions."""
    added = [daily_new_counts(spec, d) for d in range(1, days + 1)]
    b = generate_initial(
        spec,
        user_capacity=spec.users + sum(u for u, _ in added),
        track_capacity=spec.tracks + sum(t for _, t in added),
    )
    stamps = [b.users["history_updated"].copy()]  # day 0: each history's one time
    for d, (n_users, n_tracks) in enumerate(added, start=1):
        apply_day(b, d, n_users, n_tracks)
        for rows, _, _ in b.listens.appended[len(stamps) - 1 :]:
            stamps.append(b.users["history_updated"][rows].copy())  # the version of day d
    b.events["stamps"] = stamps  # type: ignore[assignment]
    return b


def listens_of(b: WorldBuilder) -> pd.DataFrame:
    """Every listen (user row, position, track row, time in epoch seconds: its history
    version's `updated_at`, as marts.fct_listens' listened_at), in ListenLog.to_csr's order."""
    base = b.listens.base
    n_users = b.users.n
    base_counts = np.zeros(n_users, dtype=np.int64)
    base_counts[: len(base.counts())] = base.counts()
    counts = base_counts.copy()
    for rows, added, _ in b.listens.appended:
        counts[rows] += added
    offsets = np.r_[0, np.cumsum(counts)]
    stamps = b.events["stamps"]
    items = np.empty(offsets[-1], dtype=np.int64)
    days = np.repeat(np.r_[stamps[0], np.zeros(n_users - len(stamps[0]))], counts)
    shift = offsets[: len(base.counts())] - base.offsets[:-1]
    positions = np.arange(len(base.items)) + np.repeat(shift, base.counts())
    items[positions] = base.items
    fill = offsets[:-1] + base_counts
    for (rows, added, appended), stamp in zip(b.listens.appended, stamps[1:], strict=True):
        starts = np.r_[0, np.cumsum(added)[:-1]]
        rank = np.arange(len(appended)) - np.repeat(starts, added)
        at = np.repeat(fill[rows], added) + rank
        items[at], days[at] = appended, np.repeat(stamp, added)
        fill[rows] += added
    owner = np.repeat(np.arange(n_users), counts)
    frame = pd.DataFrame(
        {
            "user": owner,
            "position": np.arange(len(owner)) - offsets[owner],
            "track": items,
            "at": days.astype(np.int64) // 1_000_000,
        }
    )
    alive_user, alive_track = b.users["alive"], b.tracks["alive"]
    return frame[alive_user[frame["user"]] & alive_track[frame["track"]]]


def marts_of(b: WorldBuilder, listens: pd.DataFrame) -> dict[str, Any]:
    """The recommender's inputs as the marts would hold them."""
    user_id, track_id = b.users["id"], b.tracks["id"]
    at = listens["at"].to_numpy()
    interactions = build_interactions(
        user_id[listens["user"]], track_id[listens["track"]], np.ones(len(listens)), at
    )
    alive_users = np.flatnonzero(b.users["alive"])
    favorite = b.users["preferred"][alive_users, 0]
    users = pd.DataFrame(
        {
            "user_id": user_id[alive_users],
            "genre": pd.Series(np.where(favorite >= 0, favorite, -1)).map(
                lambda g: None if g < 0 else f"g{g}"
            ),
        }
    ).sort_values("user_id")
    users["genre"] = users["genre"].astype("string")
    alive_tracks = np.flatnonzero(b.tracks["alive"])
    pairs = [
        (r, g)
        for column in ("g1", "g2")
        for r, g in zip(alive_tracks, b.tracks[column][alive_tracks], strict=True)
        if g >= 0
    ]
    bridge = pd.DataFrame(
        {
            "track_id": np.array([track_id[r] for r, _ in pairs], dtype=np.int64),
            "genre": pd.Series([f"g{g}" for _, g in pairs], dtype="string"),
        }
    )
    catalog = catalog_from_frames(interactions, users, bridge, len(alive_tracks))
    order = np.argsort(track_id[alive_tracks])
    catalog_ids = track_id[alive_tracks][order]
    artist = (
        b.tracks["artist_first"][alive_tracks] * 100_000 + b.tracks["artist_last"][alive_tracks]
    )
    tracks = track_features(
        catalog_ids,
        pd.Series(artist[order].astype(str), dtype="string"),
        bridge["track_id"].to_numpy(),
        bridge["genre"],
    )
    sequences = build_sequences(
        user_id[listens["user"]], listens["position"], track_id[listens["track"]], at
    )
    return {
        "interactions": interactions,
        "catalog": catalog,
        "tracks": tracks,
        "sequences": sequences,
    }


def candidates(config: MlConfig, grid: int, seed: int) -> list[tuple[str, Params]]:
    """Each searched family's defaults and `grid` random grid points, and the last.fm ALS."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, Params]] = [("config [model]", config.model), ("als last.fm", LASTFM_ALS)]
    for family in config.search.families:
        space = config.search.space(family)
        out.append((f"{family} defaults", config.search.params(family, {})))
        for i in range(grid):
            values = {name: values[rng.integers(len(values))] for name, values in space.items()}
            out.append((f"{family} grid {i + 1}", config.search.params(family, values)))
    seen: set[Params] = set()
    return [(n, p) for n, p in out if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def families_on(data: EvaluationData, config: MlConfig, grid: int, seed: int) -> dict[str, Any]:
    """Validation of every candidate, test of each family's best, and the daily rule."""
    metric, threads = config.selection.metric, config.runtime.num_threads
    baselines = evaluate_baselines(data)
    scored: list[Scored] = []
    for name, params in candidates(config, grid, seed):
        result, _ = evaluate_model(data, params, name, threads)
        print(
            f"    {name:<22} {params.label():<55} "
            f"{result.metrics.get(metric, float('nan')):.4f} depth {result.depth:<3} "
            f"fit {result.fit_seconds:.1f}s"
            f"{'  ' + result.error if result.error else ''}",
            flush=True,
        )
        scored.append(result)
    champion = next(s for s in scored if s.params == config.model)
    ordered = [champion, *(s for s in scored if s is not champion)]
    decision = decide(ordered, baselines, metric, config.evaluation.bootstrap())
    published = decision.baseline if decision.serving is None else ordered[decision.serving].name
    best: dict[str, Scored] = {}
    for s in scored:
        if s.error is None and (
            s.family not in best or s.score(metric) > best[s.family].score(metric)
        ):
            best[s.family] = s
    lists: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for s in [*best.values(), next(x for x in scored if x.params == LASTFM_ALS)]:
        name = "als last.fm" if s.params == LASTFM_ALS else s.family
        started = time.perf_counter()
        family_lists, _ = lists_for_test(data, (name, s.params, None), threads, s.depth)
        seconds[name] = round(time.perf_counter() - started, 1)
        lists.update(family_lists)
    if decision.serving is None:
        lists["published"] = lists[decision.baseline]
    else:
        winner = ordered[decision.serving]
        published_lists, _ = lists_for_test(
            data, ("published", winner.params, None), threads, winner.depth
        )
        lists["published"] = published_lists["published"]
    report = report_on_test(data, lists, metric, "published")
    return {
        "validation": {
            s.name: {
                "params": s.params.label(),
                "favorite_genre_depth": s.depth,
                **{m: s.metrics.get(m) for m in (metric, "coverage")},
                "fit_seconds": round(s.fit_seconds, 1),
                "error": s.error,
            }
            for s in scored
        },
        "validation_baselines": {n: b.metrics[metric] for n, b in baselines.items()},
        "best_per_family": {f: f"{s.params.label()} depth {s.depth}" for f, s in best.items()},
        "test": report,
        "test_fit_seconds": seconds,
        "decision": decision.reason,
        "published": published,
    }


def play_next_on(marts: dict[str, Any], config: MlConfig) -> dict[str, Any]:
    """The daily run's play-next choice (ml.train.play_next_lists) on these histories."""
    found = play_next_lists(marts["sequences"], marts["tracks"], config, config.runtime.num_threads)
    return {
        "published": found.model,
        "winner": found.winner,
        "config": found.config,
        "metrics": found.metrics,
    }


def run_one(profile: str, seed: int, args: argparse.Namespace, config: MlConfig) -> dict[str, Any]:
    spec = WorldSpec(seed=seed, profile=profile, users=args.users, tracks=args.tracks)
    started = time.perf_counter()
    b = build(spec, args.days)
    listens = listens_of(b)
    marts = marts_of(b, listens)
    built = time.perf_counter() - started
    interactions: Interactions = marts["interactions"]
    print(
        f"  {profile} seed {seed}: {interactions.sizes()}, {len(listens):,} listens, "
        f"built in {built:.0f}s",
        flush=True,
    )
    catalog = marts["catalog"]
    data = EvaluationData(
        split(interactions, config.evaluation),
        catalog.favorite_genre_of(interactions.user_ids),
        catalog.track_genres,
        catalog.n_catalog_tracks,
        config.evaluation,
        config.selection.metric,
    )
    print(f"  {data.split.reason}", flush=True)
    started = time.perf_counter()
    families = families_on(data, config, args.grid, seed)
    families_s = time.perf_counter() - started
    holdout: dict[str, Any] = {}
    if args.holdout_too:  # the same candidates judged on the per-user holdout, for comparison
        settings = config.evaluation.model_copy(update={"min_span_days": float("inf")})
        on_holdout = EvaluationData(
            split(interactions, settings),
            data.favorite_genre,
            data.track_genres,
            data.n_catalog_tracks,
            settings,
            config.selection.metric,
        )
        print(f"  {on_holdout.split.reason}", flush=True)
        holdout = families_on(on_holdout, config, args.grid, seed)
    started = time.perf_counter()
    play_next = play_next_on(marts, config)
    play_next_s = time.perf_counter() - started
    return {
        "profile": profile,
        "seed": seed,
        "sizes": {
            **interactions.sizes(),
            "listens": len(listens),
            "catalog": catalog.n_catalog_tracks,
        },
        "split": {"kind": data.split.kind, "reason": data.split.reason, **data.split.sizes()},
        **families,
        "on_holdout": holdout,
        "play_next": play_next,
        "seconds": {
            "build": round(built, 1),
            "families": round(families_s, 1),
            "play_next": round(play_next_s, 1),
        },
    }


def _interval(m: dict[str, float]) -> str:
    return f"{m['mean']:.4f} [{m['low']:.4f}, {m['high']:.4f}]"


def _cell(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def summary(runs: list[dict[str, Any]]) -> str:
    """Markdown: per run, each list's test NDCG@10 [interval], and play next's hit@10."""
    lines = []
    for run in runs:
        lines.append(
            f"\n{run['profile']} seed {run['seed']} ({run['split']['kind']} split; "
            f"published: {run['published']})\n"
        )
        lines.append(
            "| list | test ndcg@10 [95%] | 1-4 | 5-20 | 20+ | coverage | novelty | diversity |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, r in sorted(run["test"].items(), key=lambda kv: -kv[1]["ndcg"]["mean"]):
            segments = [
                r["segments"].get(s, {}).get("ndcg", {}).get("mean") for s in ("1-4", "5-20", "20+")
            ]
            cells = [_cell(v) for v in (*segments, r["coverage"], r["novelty"], r["diversity"])]
            lines.append(f"| {name} | {_interval(r['ndcg'])} | {' | '.join(cells)} |")
        if run.get("on_holdout"):
            ranked = sorted(
                run["on_holdout"]["test"].items(), key=lambda kv: -kv[1]["ndcg"]["mean"]
            )
            lines.append(
                "\non the per-user holdout instead, test ndcg@10: "
                + ", ".join(f"{name} {r['ndcg']['mean']:.4f}" for name, r in ranked)
            )
        m = run["play_next"]["metrics"]
        hits = {k[5:-4]: v for k, v in m.items() if k.startswith("test_") and k.endswith("_hit")}
        ranked = sorted(hits.items(), key=lambda kv: -kv[1])
        found = ", ".join(
            f"{name} {v:.4f} [{m[f'test_{name}_hit_lo']:.4f}, {m[f'test_{name}_hit_hi']:.4f}]"
            for name, v in ranked
        )
        lines.append(
            f"\nplay next, test hit@10: {found}; published {run['play_next']['published']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=0, help="default: users / 5, >= 1000")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--profiles", default="realistic,reference")
    parser.add_argument("--grid", type=int, default=2, help="grid points per family")
    parser.add_argument(
        "--holdout-too",
        action="store_true",
        help="also judge every candidate on the per-user holdout (what the time split changes)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "-o", "--override", action="append", default=[], help="ml config key=value, repeatable"
    )
    args = parser.parse_args()
    args.tracks = args.tracks or max(1000, args.users // 5)
    config = load_config(overrides=["runtime.num_threads=0", *args.override])
    runs = []
    with single_threaded_blas():
        for profile in args.profiles.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                runs.append(run_one(profile, seed, args, config))
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(
                    json.dumps(
                        {
                            "machine": {
                                "cpus": os.cpu_count(),
                                "python": platform.python_version(),
                            },
                            "args": {k: str(v) for k, v in vars(args).items()},
                            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                            // 1024,
                            "runs": runs,
                        },
                        indent=2,
                        default=float,
                    )
                )
    print(summary(runs))
    print(f"\nresults: {args.output}")


if __name__ == "__main__":
    main()
