import numpy as np
import pytest
import scipy.sparse as sp

from ml.config import Evaluation
from ml.interactions import build_interactions
from ml.split import DAY, NotEnoughData, Split, split

START = 1772323200  # 2026-03-01T00:00:00Z


def _listens(n_users: int, seed: int, days: int = 14) -> tuple[sp.csr_matrix, np.ndarray]:
    """Users with 1-30 tracks, each pair first heard at a random second over `days` days."""
    rng = np.random.default_rng(seed)
    per_user = rng.integers(1, 31, n_users)
    owner = np.repeat(np.arange(n_users), per_user)
    track = np.concatenate([rng.choice(200, k, replace=False) for k in per_user])
    times = START + rng.integers(0, days * DAY, len(owner))
    built = build_interactions(owner, track, rng.integers(1, 5, len(owner)), times)
    assert built.first_seen is not None
    return built.matrix, built.first_seen


def _owners(matrix: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))


def _assert_partition(got: Split, counts: sp.csr_matrix) -> None:
    parts = (got.train, got.valid, got.test)
    assert all(p.shape == counts.shape for p in parts)
    assert (got.train + got.valid + got.test != counts).nnz == 0  # all, values intact
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert parts[a].multiply(parts[b]).nnz == 0
    assert got.train.nnz + got.valid.nnz + got.test.nnz == counts.nnz


def test_time_split_by_days_cuts_where_told_and_judges_users_with_history() -> None:
    counts, times = _listens(300, seed=1)
    settings = Evaluation(valid_days=2, test_days=3, min_eval_users=20)
    got = split((counts, times), settings)
    assert got.kind == "time"
    _assert_partition(got, counts)
    end = (times.max() // DAY + 1) * DAY  # the midnight after the last listen
    test_cut, valid_cut = end - 3 * DAY, end - 5 * DAY
    # the oracle: every pair's window from its own time
    coo = counts.tocoo()  # canonical csr: the same order as `times`
    for part, keep in (
        (got.train, times < valid_cut),
        (got.valid, (times >= valid_cut) & (times < test_cut)),
        (got.test, times >= test_cut),
    ):
        expected = sp.csr_matrix(
            (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=counts.shape
        )
        assert (part != expected).nnz == 0
    owner = _owners(counts)
    before_valid = np.bincount(owner[times < valid_cut], minlength=300) > 0
    before_test = np.bincount(owner[times < test_cut], minlength=300) > 0
    in_valid = np.bincount(owner[(times >= valid_cut) & (times < test_cut)], minlength=300) > 0
    in_test = np.bincount(owner[times >= test_cut], minlength=300) > 0
    np.testing.assert_array_equal(got.valid_rows, np.flatnonzero(before_valid & in_valid))
    np.testing.assert_array_equal(got.test_rows, np.flatnonzero(before_test & in_test))
    assert got.cold_valid == int((~before_valid & in_valid).sum())
    assert got.cold_test == int((~before_test & in_test).sum())
    assert got.cold_test > 0  # one-track users exist: some are new in the test window
    assert got.reason.startswith(
        "time split: train before 2026-03-10, validation to 2026-03-12, test to 2026-03-15; "
    )
    sizes = got.sizes()
    assert sizes["time_split"] == 1 and sizes["test_users"] == len(got.test_rows)
    assert sizes["train_interactions"] == got.train.nnz


def test_time_split_by_shares_puts_the_latest_pairs_in_the_windows() -> None:
    counts, times = _listens(400, seed=2)
    got = split((counts, times), Evaluation(valid_share=0.1, test_share=0.2))
    assert got.kind == "time"
    _assert_partition(got, counts)
    n = counts.nnz  # times are nearly all distinct: the shares are met within a pair or two
    assert abs(got.test.nnz - 0.2 * n) <= 2 and abs(got.valid.nnz - 0.1 * n) <= 2
    coo = counts.tocoo()
    assert times[_stored(got.train, coo)].max() < times[_stored(got.valid, coo)].min()
    assert times[_stored(got.valid, coo)].max() < times[_stored(got.test, coo)].min()


def _stored(part: sp.csr_matrix, coo: sp.coo_matrix) -> np.ndarray:
    """Positions in `coo` (all pairs) of the pairs stored in `part`."""
    p = part.tocoo()
    keys = coo.row.astype(np.int64) * coo.shape[1] + coo.col
    return np.flatnonzero(np.isin(keys, p.row.astype(np.int64) * coo.shape[1] + p.col))


def test_a_day_zero_snapshot_falls_back_to_the_holdout() -> None:
    """All of a user's listens at one time (their history's updated_at): whoever is in a
    window has nothing before it, so no user can be judged by time."""
    counts, _ = _listens(300, seed=3)
    user_time = START + np.random.default_rng(3).integers(0, 60 * DAY, 300)
    got = split((counts, user_time[_owners(counts)]), Evaluation())
    assert got.kind == "holdout"
    assert got.reason.startswith("per-user holdout: only 0 users have listens both before")
    _assert_partition(got, counts)


def _simulated_days(days: int, seed: int = 4) -> tuple[sp.csr_matrix, np.ndarray]:
    """Like the simulator: day 0 stamps each user's pairs with their history's updated_at
    (within the year before), then each day a tenth of the users first hear 1 + Poisson(2)
    more tracks at times inside that day."""
    rng = np.random.default_rng(seed)
    n_users, n_tracks = 1000, 400
    owner = [np.repeat(np.arange(n_users), rng.integers(5, 35, n_users))]
    times = [(START - rng.integers(1, 365 * DAY, n_users))[owner[0]]]
    for day in range(1, days + 1):
        active = np.flatnonzero(rng.random(n_users) < 0.1)
        owner.append(np.repeat(active, 1 + rng.poisson(2, len(active))))
        times.append(START + (day - 1) * DAY + rng.integers(0, DAY, len(owner[-1])))
    users, first_seen = np.concatenate(owner), np.concatenate(times)
    tracks = rng.integers(0, n_tracks, len(users))  # a repeat keeps its earliest time
    built = build_interactions(users, tracks, np.ones(len(users)), first_seen)
    assert built.first_seen is not None
    return built.matrix, built.first_seen


@pytest.mark.parametrize(
    ("days", "windows", "kind"),
    [
        (0, {"valid_days": 1, "test_days": 1}, "holdout"),  # the snapshot alone
        (1, {"valid_days": 1, "test_days": 1}, "holdout"),  # nobody judged on validation
        (2, {"valid_days": 1, "test_days": 1}, "time"),
        (3, {"valid_share": 0.1, "test_share": 0.1}, "holdout"),  # windows still day-0 pairs
        (20, {"valid_share": 0.1, "test_share": 0.1}, "time"),
    ],
)
def test_a_time_split_holds_once_later_days_add_listens(days, windows, kind) -> None:
    counts, times = _simulated_days(days)
    got = split((counts, times), Evaluation(**windows, min_eval_users=20))
    assert got.kind == kind, got.reason
    _assert_partition(got, counts)
    if kind == "time":  # the judged users have history before their window
        assert np.diff(got.train.indptr)[got.valid_rows].min() >= 1
        assert np.diff(got.testing().train.indptr)[got.test_rows].min() >= 1
        assert got.cold_test + got.cold_valid == 0  # day-0 users all have older pairs


def test_too_short_a_history_or_no_times_fall_back() -> None:
    counts, times = _listens(200, seed=5, days=2)
    got = split((counts, times), Evaluation(min_span_days=3))
    assert got.kind == "holdout" and "span 2.0 days (needs 3)" in got.reason
    assert split((counts, None), Evaluation()).reason.startswith(
        "per-user holdout: no first-listen times; "
    )


def test_holdout_hides_k_pairs_per_window_and_one_for_small_users() -> None:
    counts, _ = _listens(500, seed=6)
    settings = Evaluation(holdout_per_user=2, min_user_tracks=5, max_eval_users=10**6, seed=1)
    got = split((counts, None), settings)
    assert got.kind == "holdout"
    _assert_partition(got, counts)
    per_user = np.diff(counts.indptr)
    in_valid, in_test = np.diff(got.valid.indptr), np.diff(got.test.indptr)
    big, small = per_user >= 5, (per_user >= 2) & (per_user < 5)
    assert np.all(in_valid[big] == 2) and np.all(in_test[big] == 2)
    assert np.all(in_valid[~big] == 0) and np.all(in_test[small] == 1)
    assert np.all(in_test[per_user == 1] == 0)
    np.testing.assert_array_equal(got.valid_rows, np.flatnonzero(big))
    np.testing.assert_array_equal(got.test_rows, np.flatnonzero(big | small))
    assert np.all(np.diff(got.train.indptr)[big | small] >= 1)  # everyone judged keeps one
    again = split((counts, None), settings)
    assert (again.test != got.test).nnz == 0 and (again.valid != got.valid).nnz == 0
    other = split((counts, None), settings.model_copy(update={"seed": 2}))
    assert (other.test != got.test).nnz > 0


def test_the_sample_is_capped_per_window() -> None:
    counts, _ = _listens(500, seed=7)
    got = split((counts, None), Evaluation(max_eval_users=50, min_eval_users=10))
    assert len(got.valid_rows) == 50 and len(got.test_rows) == 50
    assert np.count_nonzero(np.diff(got.valid.indptr)) == 50
    assert np.count_nonzero(np.diff(got.test.indptr)) == 50
    with pytest.raises(NotEnoughData, match="evaluation needs at least"):
        split((counts, None), Evaluation(min_user_tracks=10**6, min_eval_users=1))


def test_folds_and_interactions_input() -> None:
    counts, times = _listens(300, seed=8)
    owner = _owners(counts)
    built = build_interactions(owner, counts.indices, counts.data, times)
    got = split(built, Evaluation(valid_days=2, test_days=2))
    validation, testing = got.validation(), got.testing()
    assert validation.train is got.train and validation.test is got.valid
    assert (testing.train != got.train + got.valid).nnz == 0
    np.testing.assert_array_equal(testing.eval_rows, got.test_rows)
    assert got.testing().train is testing.train  # summed once


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="2 x holdout_per_user"):
        Evaluation(holdout_per_user=2, min_user_tracks=4)
    with pytest.raises(ValueError, match="set together"):
        Evaluation(valid_days=1)
    with pytest.raises(ValueError, match="below 1"):
        Evaluation(valid_share=0.5, test_share=0.5)


def test_a_sampled_split_keeps_every_judged_user_and_their_pairs() -> None:
    counts, times = _listens(600, seed=9)
    whole = split((counts, times), Evaluation(valid_days=2, test_days=2, max_eval_users=40))
    got = whole.sampled(150, seed=3)
    assert got.rows is not None and len(got.rows) == 150 and got.n_users == 600
    assert np.array_equal(got.rows, np.unique(got.rows))  # sorted, each row once
    # every judged user is in the sample, at the row that maps back to theirs
    np.testing.assert_array_equal(got.rows[got.valid_rows], whole.valid_rows)
    np.testing.assert_array_equal(got.rows[got.test_rows], whole.test_rows)
    for part, of_whole in (
        (got.train, whole.train),
        (got.valid, whole.valid),
        (got.test, whole.test),
    ):
        assert part.shape == (150, counts.shape[1])
        assert (part != of_whole[got.rows]).nnz == 0  # the same pairs, row for row
    assert "candidates fit on 150 of 600 users" in got.reason
    again = whole.sampled(150, seed=3)
    np.testing.assert_array_equal(again.rows, got.rows)  # seeded
    assert whole.sampled(0, seed=3) is whole and whole.sampled(600, seed=3) is whole
    assert got.sampled(100, seed=3) is got  # sampled once


def test_a_sample_smaller_than_the_judged_users_keeps_the_judged_users() -> None:
    counts, times = _listens(600, seed=9)
    whole = split((counts, times), Evaluation(valid_days=2, test_days=2, max_eval_users=40))
    judged = np.union1d(whole.valid_rows, whole.test_rows)
    got = whole.sampled(10, seed=3)
    assert got.rows is not None
    np.testing.assert_array_equal(got.rows, judged)
