"""Faster ways of computing the same thing, each against the way it was computed before (kept
here as the reference): the bootstrap, the decision's gains and the test report drawn at once,
the sparse top-k, the popularity rankings, the membership test, play next's scaling, its
columns by a table and its lists merged without sorts, the pruned top-k's skipped passes and
the cold-start blend's per-row sort."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from psycopg import sql

from ml import evaluate, play_next, sequences, topk
from ml.baselines import Popularity, _distinct_rows
from ml.evaluate import Scored, evaluate_model, judge
from ml.families.base import sparse_top_k
from ml.interactions import (
    LISTEN_RECORD,
    build_interactions,
    load_interactions,
    positions_of,
    read_csv,
    read_packed,
    read_users,
)
from ml.intervals import bootstrap_means, difference, differences
from ml.lists import blend, rows_or_empty
from ml.play_next import (
    NO_GAP,
    Fallbacks,
    Histories,
    _scaled,
    block_members,
    histories,
    merge_lists,
    pair_counts,
    pair_distances,
)
from ml.quality import Churn, churn, segment_intervals, segments
from ml.rerank import favorite_genre_first
from ml.selection import decide
from ml.sequences import SEQUENCE_RECORD, Sequences, load_sequences
from ml.topk import in_rows, top_k
from moovitamix.warehouse import connect
from tests.ml.test_evaluate import ALS, _data

CLOSE = {"rel": 1e-12, "abs": 1e-15}  # sums of the same products in another order


def previous_bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """ml.intervals.bootstrap_means as it was: int64 draws, one bincount per chunk."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    rng = np.random.default_rng(seed)
    present = (~np.isnan(values)).astype(np.float64)
    filled = np.where(present > 0, values, 0.0)
    out = np.empty((resamples, values.shape[1]))
    chunk = max(1, 4_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n, (size, n)) + np.arange(size)[:, None] * n
        weights = np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n)
        weights = weights.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + size] = (weights @ filled) / (weights @ present)
    return out


@pytest.mark.parametrize("n", [1, 2, 7, 500, 20_001])
def test_the_bootstrap_draws_the_same_resamples_as_before(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.random((n, 3))
    values[::3, 1] = np.nan  # a metric undefined for some users
    values[:, 2] = np.nan if n == 1 else values[:, 2]
    got = bootstrap_means(values, resamples=300, seed=5)
    np.testing.assert_array_equal(got, previous_bootstrap_means(values, 300, 5))


def test_many_differences_at_once_are_each_difference_alone() -> None:
    rng = np.random.default_rng(1)
    a, b, c = (rng.random(3000) for _ in range(3))
    together = differences({"ab": (a, b), "ac": (a, c), "cb": (c, b)}, resamples=200, seed=3)
    for key, (x, y) in {"ab": (a, b), "ac": (a, c), "cb": (c, b)}.items():
        alone = difference(x, y, resamples=200, seed=3)
        assert vars(together[key]) == pytest.approx(vars(alone), **CLOSE)
    with pytest.raises(ValueError, match="same users"):
        differences({"x": (a, b[:-1])})


def test_the_decision_and_its_gains_are_those_of_one_difference_at_a_time() -> None:
    rng = np.random.default_rng(2)
    base = rng.random(2000) * 0.2
    candidates = [
        Scored(f"c{i}", {"ndcg": 0.0}, per_user={"ndcg": base + shift + rng.normal(0, 0.05, 2000)})
        for i, shift in enumerate([0.01, 0.0, 0.03, 0.012])
    ]
    for c in candidates:
        c.metrics["ndcg"] = float(c.per_user["ndcg"].mean())
    baselines = {"pop": Scored("pop", {"ndcg": float(base.mean())}, per_user={"ndcg": base})}
    bootstrap = {"resamples": 300, "seed": 4}
    decision = decide(candidates, baselines, "ndcg", bootstrap)
    for i, found in decision.gains.items():
        one = difference(candidates[i].per_user["ndcg"], base, **bootstrap)
        assert vars(found["vs_baseline"]) == pytest.approx(vars(one), **CLOSE)
        if i:
            champion = candidates[0].per_user["ndcg"]
            one = difference(candidates[i].per_user["ndcg"], champion, **bootstrap)
            assert vars(found["vs_champion"]) == pytest.approx(vars(one), **CLOSE)
    assert decision.serving == 2 and decision.promoted


def test_the_test_report_is_each_lists_own_segments_and_gains(structured_marts) -> None:
    """report_on_test bootstraps every list and gain at once per segment: the figures of the
    previous way, one list (and one gain) at a time."""
    data = _data(structured_marts)
    _, start = evaluate_model(data, ALS, "als")
    lists, _ = evaluate.lists_for_test(data, ("model", ALS, start), num_threads=1)
    report = evaluate.report_on_test(data, lists, "ndcg", "model")
    fold = data.split.testing()
    labels = segments(np.diff(fold.train[fold.eval_rows].indptr))
    bootstrap = data.settings.bootstrap()
    per_user = {
        name: judge(ids, fold, data.k, data.n_catalog_tracks)[1] for name, ids in lists.items()
    }
    for name in lists:
        alone = segment_intervals(per_user[name], labels, **bootstrap)
        for metric, interval in alone.pop("all").items():
            assert report[name][metric] == pytest.approx(vars(interval), rel=1e-9, abs=1e-6)
        for segment, found in alone.items():
            assert report[name]["segments"][segment]["ndcg"] == pytest.approx(
                vars(found["ndcg"]), rel=1e-9, abs=1e-6, nan_ok=True
            )
        if name != "model":
            gain = difference(per_user["model"]["ndcg"], per_user[name]["ndcg"], **bootstrap)
            assert report["model"][f"gain_vs_{name}"] == pytest.approx(
                vars(gain), rel=1e-9, abs=1e-6
            )


def previous_sparse_top_k(scores: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = scores.tocsr()
    n, k = scores.shape[0], min(k, scores.shape[1])
    ids, values = np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf)
    rows = np.repeat(np.arange(n), np.diff(scores.indptr))
    order = np.lexsort((scores.indices, -scores.data, rows))
    rank = np.arange(len(order)) - scores.indptr[rows[order]]
    top = rank < k
    keep = order[top]
    ids[rows[keep], rank[top]] = scores.indices[keep]
    values[rows[keep], rank[top]] = scores.data[keep]
    return ids, values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_top_k_by_packed_keys_is_the_lexsorts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    dense = rng.choice([-2.5, -1.0, -0.0, 0.5, 1.0, 3.0, np.inf], size=(40, 30)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.4] = 0  # not stored
    dense[5] = 0
    coo = sp.coo_matrix(dense)
    keep = coo.data != 0
    order = rng.permutation(int(keep.sum()))  # columns unsorted within rows
    matrix = sp.csr_matrix(
        (coo.data[keep][order], (coo.row[keep][order], coo.col[keep][order])), shape=dense.shape
    )
    matrix.data[::7] = -0.0  # stored zeros of either sign rank as equals
    for k in (1, 4, 30):
        got, expected = sparse_top_k(matrix, k), previous_sparse_top_k(matrix, k)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_popularity_rankings_by_genres_shared_are_the_score_sorts() -> None:
    rng = np.random.default_rng(3)
    counts = sp.random(300, 500, density=0.02, format="csr", random_state=4, dtype=np.float32)
    genres = sp.csr_matrix((rng.random((500, 12)) < 0.15).astype(np.float32))
    popularity = Popularity(counts, genres)
    classes, _ = _distinct_rows(popularity.genres)
    scores = popularity.rank_score + popularity.bonus * (
        classes.astype(float) @ popularity.genres.T
    )
    previous = np.argsort(-scores, axis=1, kind="stable")
    np.testing.assert_array_equal(popularity._rankings(classes), previous)


def test_in_rows_is_the_sparse_lookup() -> None:
    rng = np.random.default_rng(5)
    matrix = sp.random(50, 40, density=0.2, format="csr", random_state=6, dtype=np.float32)
    matrix.data[::5] = 0  # a stored zero is not a member
    matrix.has_sorted_indices = False
    rows = rng.integers(0, 50, 30)
    ids = rng.integers(-1, 40, (30, 12))
    previous = (matrix[rows[:, None], np.maximum(ids, 0)].toarray() != 0) & (ids >= 0)
    np.testing.assert_array_equal(in_rows(matrix, rows, ids), previous)
    np.testing.assert_array_equal(in_rows(sp.csr_matrix((50, 40)), rows, ids), False)


def previous_in_rows(matrix: sp.csr_matrix, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """ml.topk.in_rows as it was: one binary search per cell in the rows' sorted keys."""
    sub = matrix.tocsr()[np.asarray(rows)]
    if not sub.has_sorted_indices:
        sub.sort_indices()
    width = np.int64(max(sub.shape[1], 1))
    owner = np.repeat(np.arange(sub.shape[0], dtype=np.int64), np.diff(sub.indptr))
    keys = (owner * width + sub.indices)[sub.data != 0]
    if len(keys) == 0:
        return np.zeros(np.shape(ids), dtype=bool)
    wanted = np.arange(len(ids), dtype=np.int64)[:, None] * width + np.maximum(ids, 0)
    found = keys[np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)] == wanted
    return found & (ids >= 0)


@pytest.mark.parametrize("flags", [1, 7 * 40, 10**9])  # a row at a time, some, all at once
def test_in_rows_by_dense_flags_is_the_binary_search(monkeypatch, flags: int) -> None:
    monkeypatch.setattr(topk, "IN_ROWS_FLAGS", flags)
    rng = np.random.default_rng(flags)
    matrix = sp.random(300, 40, density=0.15, format="csr", random_state=2, dtype=np.float32)
    matrix.data[::7] = 0  # stored zeros are not members
    duplicated = sp.csr_matrix(  # a repeated column, unsorted: still one member
        (np.ones(3, np.float32), np.array([5, 2, 5]), np.array([0, 3] + [3] * 299)),
        shape=(300, 40),
    )
    for m in (matrix, duplicated, sp.csr_matrix((300, 40), dtype=np.float32)):
        rows = rng.integers(0, 300, 250)
        ids = rng.integers(-1, 40, (250, 15))
        np.testing.assert_array_equal(in_rows(m, rows, ids), previous_in_rows(m, rows, ids))
    assert in_rows(matrix, rows[:0], ids[:0]).shape == (0, 15)


def test_entrywise_scaling_is_the_diagonal_products() -> None:
    rng = np.random.default_rng(7)
    matrix = sp.random(30, 20, density=0.3, format="csr", random_state=8, dtype=np.float32)
    rows, cols = rng.random(30).astype(np.float32), rng.random(20).astype(np.float32) ** -0.5
    by_products = sp.diags(rows).dot(matrix).dot(sp.diags(cols)).tocsr()
    by_products.sort_indices()
    got = _scaled(_scaled(matrix, rows=rows), cols=cols)
    np.testing.assert_array_equal(got.indptr, by_products.indptr)
    np.testing.assert_array_equal(got.indices, by_products.indices)
    np.testing.assert_array_equal(got.data, by_products.data)  # the same float32 products


@pytest.mark.parametrize("probe", [10, 100_000])
def test_skipping_a_head_pass_that_settles_few_rows_keeps_the_lists(monkeypatch, probe) -> None:
    """With the probe (10 rows) a pass is tried first on a few rows and skipped when they
    do not settle; without it (a probe larger than the rows) every pass runs: same lists."""
    rng = np.random.default_rng(9)
    lengths = rng.pareto(1.5, 3000).astype(np.float32) + 0.1
    items = rng.standard_normal((3000, 8)).astype(np.float32) * lengths[:, None]
    query = rng.standard_normal((300, 8)).astype(np.float32)
    exclude = sp.random(300, 3000, density=0.01, format="csr", random_state=2, dtype=np.float32)
    exclude.data[:] = 1
    full = topk._top_k_all(items, query, 50, exclude, 1)
    monkeypatch.setattr(topk, "PRUNE_PROBE", probe)
    for worth in (0.0, 0.5, 1.0):  # every pass, some, none
        monkeypatch.setattr(topk, "PRUNE_WORTH", worth)
        ids, scores = top_k(items, query, 50, exclude, num_threads=1)
        np.testing.assert_array_equal(ids, full[0])
        np.testing.assert_array_equal(scores, full[1])


def previous_blend(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray], weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ml.lists.blend as it was: one sort of every row's slots by row, id and score."""
    (ids_a, src_a), (ids_b, src_b) = first, second
    n, k = ids_a.shape
    place = 1.0 - np.arange(k) / k
    ids = np.hstack([ids_a, ids_b])
    src = np.hstack([src_a, src_b])
    score = np.hstack([weight[:, None] * place, (1 - weight)[:, None] * place])
    score[ids < 0] = -np.inf
    row = np.repeat(np.arange(n), 2 * k)
    order = np.lexsort((-score.ravel(), ids.ravel(), row))
    sorted_ids, sorted_rows = ids.ravel()[order], row[order]
    repeat = np.r_[
        False, (sorted_ids[1:] == sorted_ids[:-1]) & (sorted_rows[1:] == sorted_rows[:-1])
    ]
    flat = score.ravel()
    flat[order[repeat]] = -np.inf
    best = np.argsort(-score, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(ids, best, axis=1)
    kept = np.take_along_axis(score, best, axis=1) > -np.inf
    return np.where(kept, picked, -1), np.where(kept, np.take_along_axis(src, best, axis=1), -1)


def test_the_blend_by_a_sort_per_row_is_the_sort_of_all_rows() -> None:
    rng = np.random.default_rng(9)
    n, k = 2_000, 10
    a, b = rng.integers(-1, 25, (n, k)), rng.integers(-1, 25, (n, k))  # many ids in both
    a[:50], b[50:100] = -1, -1  # empty lists
    src_a = np.where(a >= 0, 0, -1).astype(np.int8)
    src_b = np.where(b >= 0, rng.integers(1, 3, (n, k)), -1).astype(np.int8)
    weight = rng.random(n)
    weight[::4], weight[1::4], weight[2::8] = 1.0, 0.5, 0.0  # ties between the lists' scores
    got = blend((a, src_a), (b, src_b), weight)
    for mine, theirs in zip(got, previous_blend((a, src_a), (b, src_b), weight), strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("case", ["every row in order", "new users between", "some rows"])
def test_rows_or_empty_is_the_selection_times_a_mask(case: str) -> None:
    matrix = sp.random(40, 30, density=0.2, format="csr", random_state=3, dtype=np.float32)
    rows = {
        "every row in order": np.arange(40),
        "new users between": np.insert(np.arange(40), [0, 7, 7, 40], -1),
        "some rows": np.array([-1, 3, 4, 9, -1, 30, 39]),
    }[case]
    previous = sp.csr_matrix(matrix[np.maximum(rows, 0)].multiply((rows >= 0)[:, None]))
    got = rows_or_empty(matrix, rows)
    assert got.shape == previous.shape
    np.testing.assert_array_equal(got.toarray(), previous.toarray())
    assert (got.data != 0).all()  # the product stored zeros for new users: none here


def previous_build_interactions(
    user_ids: np.ndarray, track_ids: np.ndarray, counts: np.ndarray, first_seen: np.ndarray
) -> tuple[np.ndarray, ...]:
    """ml.interactions.build_interactions as it was: np.unique of both ids, then one sort of
    every pair's key (its matrix's arrays, ids and times)."""
    users, rows = np.unique(np.asarray(user_ids, dtype=np.int64), return_inverse=True)
    tracks, cols = np.unique(np.asarray(track_ids, dtype=np.int64), return_inverse=True)
    width = max(len(tracks), 1)
    key = rows.astype(np.int64) * width + cols
    order = np.argsort(key)
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]][: len(key)])
    data = np.add.reduceat(np.asarray(counts, dtype=np.float32)[order], starts)
    times = np.minimum.reduceat(np.asarray(first_seen, dtype=np.int64)[order], starts)
    key = key[starts]
    indptr = np.searchsorted(key // width, np.arange(len(users) + 1))
    return indptr, (key % width), data, users, tracks, times


@pytest.mark.parametrize("repeats", [False, True])
@pytest.mark.parametrize("ids", ["dense", "sparse"])
def test_interactions_built_by_scipys_csr_build_are_the_key_sort(repeats: bool, ids: str) -> None:
    rng = np.random.default_rng(int(repeats))
    n_users, n_tracks = 3000, 700
    pairs = rng.choice(n_users * n_tracks, 40_000, replace=False)
    if repeats:
        pairs = np.concatenate([pairs, pairs[:500]])
    rng.shuffle(pairs)
    scale = 1 if ids == "dense" else 10**9  # sparse ids: np.unique's path
    users, tracks = (pairs // n_tracks) * scale + 5, (pairs % n_tracks) * scale + 11
    counts = rng.integers(1, 30, len(pairs))
    times = rng.integers(0, 10**9, len(pairs))
    got = build_interactions(users, tracks, counts, times)
    indptr, indices, data, user_ids, track_ids, first_seen = previous_build_interactions(
        users, tracks, counts, times
    )
    np.testing.assert_array_equal(got.matrix.indptr, indptr)
    np.testing.assert_array_equal(got.matrix.indices, indices)
    np.testing.assert_array_equal(got.matrix.data, data)
    np.testing.assert_array_equal(got.user_ids, user_ids)
    np.testing.assert_array_equal(got.track_ids, track_ids)
    np.testing.assert_array_equal(got.first_seen, first_seen)
    assert got.matrix.dtype == np.float32 and got.matrix.has_sorted_indices


PREVIOUS_SEQUENCES_QUERY = """
    copy (
        with numbered as (
            select
                user_id,
                row_number() over (order by user_id) - 1 as user_number,
                greatest(count(*) over () / 256, 1) as step
            from marts.dim_users
        ),
        bounds as (
            select array_agg(user_id order by user_id) as lower_bounds
            from numbered
            where user_number % step = 0
        ),
        listens as (
            select
                width_bucket(f.user_id, bounds.lower_bounds) as bucket,
                f.user_id,
                u.position,
                int8send(f.user_id::bigint) || int4send(u.position)
                    || int8send(f.track_id::bigint)
                    || int8send(coalesce(extract(epoch from u.listened_at), 0)::bigint)
                    as record
            from marts.fct_listens as f
            cross join lateral unnest(f.positions, f.listened_at) as u(position, listened_at)
            cross join bounds
            where u.position is not null
        )
        select string_agg(record, ''::bytea order by user_id, position)
        from listens
        group by bucket
        order by bucket
    ) to stdout (format binary)
"""


@pytest.mark.integration
def test_sequences_sorted_per_message_and_unnested_only_when_needed_are_the_servers(
    marts_url, caplog, monkeypatch
) -> None:
    monkeypatch.setattr(sequences, "TIME_CHUNK", 1_001)  # times converted in several chunks
    with connect(marts_url, autocommit=True) as conn:
        # besides the synthetic histories: a null position and time, arrays of unequal length
        # (unnest pads them), fractional and pre-1970 times (the rounding of the seconds)
        conn.execute("insert into marts.dim_tracks values (999001, 'x')")
        conn.execute(
            "insert into marts.fct_listens (user_id, track_id, listen_count, positions, "
            "listened_at) select min(user_id), 999001, 3, "
            "array[null, 9001, 9002], array['1969-12-31 23:59:58.5+00'::timestamptz, null, "
            "'2026-01-01 00:00:00.5+00'] from marts.fct_listens"
        )
        conn.execute(
            "insert into marts.fct_listens (user_id, track_id, listen_count, positions, "
            "listened_at) select max(user_id), 999001, 1, array[9003, 9004], "
            "array['2026-01-01 00:00:01.49+00'::timestamptz] from marts.fct_listens"
        )
        conn.execute("analyze marts.fct_listens")
        multi = conn.execute(
            "select count(*) filter (where cardinality(positions) > 1), count(*) "
            "from marts.fct_listens"
        ).fetchone()
        got = load_sequences(conn)
        previous = read_packed(conn, sql.SQL(PREVIOUS_SEQUENCES_QUERY), SEQUENCE_RECORD)
    assert "out of order" not in caplog.text  # in history order as read: no fallback sort
    assert multi is not None and 0 < multi[0] < multi[1]  # both kinds of rows
    assert len(got) == len(previous["user_id"]) > multi[1]
    for name in ("user_id", "position", "track_id", "listened_at"):
        np.testing.assert_array_equal(getattr(got, name), previous[name], err_msg=name)


@pytest.mark.integration
def test_sequences_in_messages_bounded_by_given_users_are_the_server_bounded_ones(
    marts_url, caplog
) -> None:
    with connect(marts_url, autocommit=True) as conn:
        user_ids = np.sort(read_users(conn)["user_id"].to_numpy(dtype=np.int64))
        bounds = sequences.SERVER_BOUNDS.format(
            dim_users=sql.Identifier("marts", "dim_users"),
            buckets=sql.Literal(sequences.PACKED_BUCKETS),
        )
        query = sql.SQL("with {} unused as (select 1) select lower_bounds from bounds")
        row = conn.execute(query.format(bounds)).fetchone()
        assert row is not None and row[0] == sequences.message_bounds(user_ids)  # the same
        served = load_sequences(conn)
        # and any other increasing bounds: other messages, the same sequences
        for given in (user_ids, user_ids[::7], user_ids[-1:], np.r_[user_ids, user_ids[-1] + 5]):
            got = load_sequences(conn, user_ids=given)
            for name in ("user_id", "position", "track_id", "listened_at"):
                np.testing.assert_array_equal(getattr(got, name), getattr(served, name), name)
    assert len(served) > len(user_ids) > 1
    assert "out of order" not in caplog.text  # in history order as read: no fallback sort


def previous_pair_masks(h: Histories, window: int, max_gap: int) -> list[np.ndarray]:
    """ml.play_next's pair flags as they were (now pair_distances, whose flags are d > 0)."""
    n, masks = len(h.user), []
    for lag in range(1, window + 1):
        ok = np.zeros(n, dtype=bool)
        first, second = slice(0, max(n - lag, 0)), slice(lag, n)
        ok[first] = (
            (h.user[second] == h.user[first])
            & (h.position[second] - h.position[first] <= window)
            & (h.at[second] - h.at[first] <= max_gap)
            & (h.col[second] != h.col[first])
        )
        masks.append(ok)
    return masks


def previous_pair_counts(
    h: Histories, window: int, max_gap: int, lo: int, hi: int, masks: list[np.ndarray]
) -> sp.csr_matrix:
    """ml.play_next.pair_counts as it was two ways back: a pass over every listen per lag and
    way, each pair's distance from the positions."""
    in_block = (h.col >= lo) & (h.col < hi)
    rows, cols, values = [], [], []
    for lag, ok in enumerate(masks, start=1):
        ways = [(ok & in_block, 0, lag)]
        if window > 1:
            ways.append((ok & np.roll(in_block, -lag), lag, 0))
        for keep, row_at, col_at in ways:
            first = np.flatnonzero(keep)
            distance = h.position[first + lag] - h.position[first]
            rows.append(h.col[first + row_at] - lo)
            cols.append(h.col[first + col_at])
            values.append((1.0 / distance).astype(np.float32))
    matrix = sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(hi - lo, h.n_tracks),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix


@pytest.mark.parametrize("window", [1, 3])
def test_pair_counts_among_a_blocks_listens_are_the_passes_over_every_listen(window) -> None:
    rng = np.random.default_rng(window)
    n, n_tracks = 30_000, 300
    user = np.sort(rng.integers(0, 2_000, n)).astype(np.int32)
    position = np.zeros(n, dtype=np.int32)
    for i in range(1, n):  # gaps where a listen of an unknown track was dropped
        position[i] = 0 if user[i] != user[i - 1] else position[i - 1] + rng.integers(1, 3)
    col = rng.zipf(1.5, n).clip(1, n_tracks).astype(np.int32) - 1  # popular tracks repeat
    h = Histories(user, position, col, np.cumsum(rng.choice([0, 60, 4000], n)), n_tracks)
    gap = NO_GAP if window == 1 else 3600
    distances = pair_distances(h, window, gap)
    masks = previous_pair_masks(h, window, gap)
    for mask, distance in zip(masks, distances, strict=True):  # the flags are the distances'
        np.testing.assert_array_equal(distance > 0, mask)
    # the last block ends at the last listen's track: a pair mask is False past n - lag
    for lo, hi in [(0, 1), (0, 17), (17, 120), (120, n_tracks), (0, n_tracks)]:
        previous = previous_pair_counts(h, window, gap, lo, hi, masks)
        for got in (
            pair_counts(h, window, gap, lo, hi),
            pair_counts(h, window, gap, lo, hi, distances),
            pair_counts(h, window, gap, lo, hi, distances, block_members(h, lo, hi)),
        ):
            np.testing.assert_array_equal(got.indptr, previous.indptr)
            np.testing.assert_array_equal(got.indices, previous.indices)
            np.testing.assert_array_equal(got.data, previous.data)  # summed in the same order


def previous_churn(
    yesterday: tuple[np.ndarray, np.ndarray], today: tuple[np.ndarray, np.ndarray]
) -> float:
    """ml.quality.churn as it was: both days as sorted int64 keys, searched."""
    ids = [np.asarray(a, dtype=np.int64) for a in (*yesterday, *today)]
    if all(len(a) == 0 or (a.min() >= 0 and a.max() < 2**31) for a in ids):
        y_key, t_key, width = ids[0] * 2**31 + ids[1], ids[2] * 2**31 + ids[3], 2**31
    else:
        _, users = np.unique(np.r_[ids[0], ids[2]], return_inverse=True)
        tracks, codes = np.unique(np.r_[ids[1], ids[3]], return_inverse=True)
        key = users.astype(np.int64) * len(tracks) + codes
        y_key, t_key, width = key[: len(ids[0])], key[len(ids[0]) :], len(tracks)
    if len(y_key) == 0 or len(t_key) == 0:
        return float("nan")
    t_key = np.sort(t_key)
    block = y_key // width * width
    served_today = np.searchsorted(t_key, block + width) > np.searchsorted(t_key, block)
    if not served_today.any():
        return float("nan")
    at = np.minimum(np.searchsorted(t_key, y_key), len(t_key) - 1)
    return float(np.mean(t_key[at][served_today] != y_key[served_today]))


@pytest.mark.parametrize("ids", ["small", "beyond 31 bits", "negative"])
@pytest.mark.parametrize("today_order", ["by user", "shuffled", "k each"])
def test_churn_by_rows_of_tracks_per_user_is_the_key_search(ids: str, today_order: str) -> None:
    rng = np.random.default_rng(len(ids) + len(today_order))
    scale, shift = {"small": (1, 0), "beyond 31 bits": (2**33, 0), "negative": (1, -500)}[ids]

    def lists(users: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        owners = np.repeat(users, k)  # by user, k[i] rows each (short lists too)
        tracks = rng.integers(0, 60, len(owners)) * scale + shift  # repeats within a list too
        return owners * scale + shift, tracks

    y = lists(rng.choice(3000, 2000, replace=False), rng.integers(1, 11, 2000))
    lengths = np.full(2500, 10) if today_order == "k each" else rng.integers(1, 11, 2500)
    t = lists(np.sort(rng.choice(3000, 2500, replace=False)), lengths)
    if today_order == "shuffled":
        order = rng.permutation(len(t[0]))
        t = (t[0][order], t[1][order])
    previous = previous_churn(y, t)
    assert 0 < previous < 1
    assert churn(y, t) == previous
    counted = Churn(*t)  # yesterday's rows in parts, in any order
    order = rng.permutation(len(y[0]))
    for part in np.array_split(order, 7):
        counted.add(y[0][part], y[1][part])
    assert counted.value == previous
    empty = np.empty(0, np.int64)
    for a, b in [(y, (empty, empty)), ((empty, empty), t), (y, (y[0][:0], y[1][:0]))]:
        assert np.isnan(churn(a, b)) and np.isnan(previous_churn(a, b))
    nobody = (y[0] + 10**6 * scale, y[1])  # no user of yesterday's served today
    assert np.isnan(churn(nobody, t)) and np.isnan(previous_churn(nobody, t))


@pytest.mark.integration
def test_users_packed_with_their_genres_number_are_the_csv_rows(marts_url) -> None:
    with connect(marts_url, autocommit=True) as conn:
        conn.execute(  # no genre, an empty one, one CSV would quote, ids out of order
            "insert into marts.dim_users values (990003, null), (990001, ''), "
            "(990002, 'rock, \"live\"'), (-5, 'NA')"
        )
        got = read_users(conn)
        previous = read_csv(
            conn,
            "select user_id::bigint as user_id, favorite_genre_id::text as genre "
            "from {} order by user_id",
            sql.Identifier("marts", "dim_users"),
        )
    assert previous["genre"].isna().sum() >= 2 and (previous["genre"] == "NA").sum() == 1
    pd.testing.assert_frame_equal(got, previous)


PREVIOUS_LISTENS_QUERY = """
    copy (
        select string_agg(
            int8send(user_id::bigint) || int8send(track_id::bigint) || int4send(listen_count)
                || int8send(coalesce(floor(extract(epoch from first_seen_at))::bigint, 0)),
            ''::bytea
        )
        from marts.fct_listens
        where listen_count > 0
        group by user_id % 256
    ) to stdout (format binary)
"""


@pytest.mark.integration
def test_first_listens_sent_as_binary_timestamps_are_the_extracted_epochs(marts_url) -> None:
    with connect(marts_url, autocommit=True) as conn:
        conn.execute(
            "insert into marts.dim_tracks select 999000 + i, 'x' from generate_series(1, 5) i"
        )
        conn.execute(  # no time, before 1970 and 2000 with fractions, just before/after a second
            "insert into marts.fct_listens (user_id, track_id, listen_count, first_seen_at) "
            "select u, 999000 + i, i, t from (select min(user_id) u from marts.dim_users) m, "
            "(values (1, null::timestamptz), (2, '1969-12-31 23:59:58.5+00'), "
            "(3, '1999-12-31 23:59:59.999999+00'), (4, '2026-01-01 00:00:00.000001+00'), "
            "(5, '1960-01-01 00:00:00+00')) v(i, t)"
        )
        got = load_interactions(conn)
        records = read_packed(conn, sql.SQL(PREVIOUS_LISTENS_QUERY), LISTEN_RECORD)
    previous = build_interactions(
        records["user_id"], records["track_id"], records["listen_count"], records["first_seen"]
    )
    assert got.first_seen is not None and previous.first_seen is not None
    assert (previous.first_seen < 0).sum() == 2 and (previous.first_seen == 0).sum() >= 1
    np.testing.assert_array_equal(got.first_seen, previous.first_seen)
    np.testing.assert_array_equal(got.matrix.data, previous.matrix.data)
    np.testing.assert_array_equal(got.matrix.indices, previous.matrix.indices)


def previous_favorite_genre_first(
    ids: np.ndarray, favorite: np.ndarray, track_genres: sp.csr_matrix, k: int, depth: int
) -> np.ndarray:
    """ml.rerank.favorite_genre_first as it was: a binary search of (track, genre) keys."""
    k = min(k, ids.shape[1])
    if depth <= k:
        return np.broadcast_to(np.arange(k), (len(ids), k))
    head = ids[:, :depth]
    n_genres = max(track_genres.shape[1], 1)
    memberships = track_genres.tocoo()
    keys = np.unique(memberships.row.astype(np.int64) * n_genres + memberships.col)
    wanted = np.maximum(head, 0).astype(np.int64) * n_genres + np.maximum(favorite, 0)[:, None]
    found = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    in_genre = keys[found] == wanted if len(keys) else np.zeros(head.shape, dtype=bool)
    in_genre &= (head >= 0) & (favorite >= 0)[:, None]
    group = np.where(in_genre, 0, np.where(head >= 0, 1, 2))
    return np.argsort(group, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_favorite_genre_first_by_a_table_is_the_binary_search(seed: int) -> None:
    """Tracks of several, one or no genres, users of no favorite, empty slots, every depth."""
    rng = np.random.default_rng(seed)
    n_tracks, n_genres = 300, 7
    track_genres = sp.random(
        n_tracks, n_genres, density=0.2, format="csr", random_state=seed, dtype=np.float32
    )
    ids = np.argsort(rng.random((200, n_tracks)), axis=1)[:, :120]
    ids[rng.random(ids.shape) < 0.05] = -1
    ids = np.sort(ids, axis=1)[:, ::-1].copy()  # empty slots last
    ids[:, :100] = ids[:, rng.permutation(100)]
    favorite = rng.integers(-1, n_genres, 200)
    for k, depth in [(10, 10), (10, 25), (10, 100), (20, 120)]:
        got = favorite_genre_first(ids, favorite, track_genres, k, depth)
        expected = previous_favorite_genre_first(ids, favorite, track_genres, k, depth)
        np.testing.assert_array_equal(got, expected)
    assert (favorite_genre_first(ids, favorite, track_genres, 10, 100) != np.arange(10)).any()


def previous_histories_columns(sequences: Sequences, catalog_ids: np.ndarray) -> np.ndarray:
    """ml.play_next.histories' columns as they were: a binary search of every listen's track."""
    return positions_of(catalog_ids, sequences.track_id).astype(np.int32)


@pytest.mark.parametrize("ids", ["dense", "sparse"])  # by the table, by the binary search
def test_histories_columns_by_a_table_are_the_binary_search(monkeypatch, ids: str) -> None:
    rng = np.random.default_rng(5)
    n = 5_000
    space = 3_000 if ids == "dense" else 10**12  # the id range, against the listens
    catalog = 7 + 3 * np.unique(rng.integers(0, space // 3, 450))[:400]  # sorted, distinct
    # played tracks: catalog ones, others between them, and some below and above its range
    others = np.r_[catalog - 1, catalog[0] - 5, catalog[-1] + 1, catalog[-1] + 10**6, -3]
    track_id = np.where(rng.random(n) < 0.8, rng.choice(catalog, n), rng.choice(others, n))
    user_id = np.sort(rng.integers(0, 300, n)).astype(np.int64)
    position = np.arange(n, dtype=np.int32)  # in order within each user
    sequences = Sequences(user_id, position, track_id, np.arange(n, dtype=np.int64))
    previous = previous_histories_columns(sequences, catalog)
    assert (previous < 0).any() and (previous >= 0).any()
    got = histories(sequences, catalog)
    kept = previous >= 0
    np.testing.assert_array_equal(got.col, previous[kept])
    np.testing.assert_array_equal(got.position, position[kept])
    np.testing.assert_array_equal(got.at, sequences.listened_at[kept])
    assert got.n_tracks == len(catalog) and got.col.dtype == np.int32
    # the same in many chunks (each mapped on its own), and in chunks of 1,000
    for chunk in (7, 1_000):
        monkeypatch.setattr(play_next, "LISTEN_CHUNK", chunk)
        np.testing.assert_array_equal(histories(sequences, catalog).col, got.col)


def previous_merge_lists(
    parts: list[tuple[np.ndarray, np.ndarray, int | np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ml.play_next.merge_lists as it was: the kept entries brought forward by a stable sort."""
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([np.asarray(p[1], np.float64) for p in parts], axis=1)
    source = np.concatenate([np.broadcast_to(p[2], p[0].shape) for p in parts], axis=1)
    order = np.argsort(ids, axis=1, kind="stable")
    ranked = np.take_along_axis(ids, order, 1)
    repeat = np.zeros(ids.shape, dtype=bool)
    np.put_along_axis(repeat, order[:, 1:], ranked[:, 1:] == ranked[:, :-1], 1)
    keep = (ids >= 0) & ~repeat
    pick = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, pick, 1)
    return (
        np.where(kept, np.take_along_axis(ids, pick, 1), -1),
        np.where(kept, np.take_along_axis(scores, pick, 1), 0.0),
        np.where(kept, np.take_along_axis(source, pick, 1), -1).astype(np.int8),
    )


def _lists(rng: np.random.Generator, n: int, width: int, n_ids: int) -> np.ndarray:
    """Lists over few ids: repeats within a row and across lists, -1 anywhere (mostly at the
    end), some rows empty."""
    ids = rng.integers(-1, n_ids, (n, width))
    ids[rng.random((n, width)) < 0.2] = -1
    ends = rng.integers(0, width + 1, n)
    ids[np.arange(width)[None, :] >= ends[:, None]] = -1
    return ids


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lists_merged_without_sorts_are_the_sorted_merge(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 2_000, 10
    model, artist, genre, popular = (_lists(rng, n, k, 25) for _ in range(4))
    scores = [rng.random((n, k)).round(1) for _ in range(4)]  # ties
    genre_source = rng.integers(2, 4, (n, k))
    parts = [(model, scores[0], 0), (artist, scores[1], 1), (genre, scores[2], genre_source)]
    parts.append((popular, scores[3], 3))
    for width in (1, 3, k, 2 * k, 4 * k + 5):  # narrower and wider than the lists
        for got, previous in (
            (merge_lists(parts, width), previous_merge_lists(parts, width)),
            (merge_lists(parts[1:2], width), previous_merge_lists(parts[1:2], width)),
        ):
            for a, b in zip(got, previous, strict=True):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)
    fill = Fallbacks((artist, scores[1]), (genre, scores[2], genre_source), (popular, scores[3]))
    for got, previous in (
        (fill.fill(model, scores[0]), previous_merge_lists(parts, k)),
        (fill.fill(), previous_merge_lists(parts[1:], k)),
        (
            fill.fill(model[:, :3], scores[0][:, :3]),
            previous_merge_lists([(model[:, :3], scores[0][:, :3], 0), *parts[1:]], k),
        ),
        (fill.fill(np.full((n, k), -1), scores[0]), previous_merge_lists(parts[1:], k)),
    ):
        for a, b in zip(got, previous, strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
