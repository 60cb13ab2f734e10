"""The evaluation split (ml/README.md "The split"): train, validation (model selection) and
test (the reported figures), by time when the history allows it, else a seeded per-user
holdout."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Literal

import numpy as np
import scipy.sparse as sp

from ml.config import Evaluation
from ml.interactions import Interactions

DAY = 86400


class NotEnoughData(RuntimeError):
    """Too few users to evaluate on; the message is one line."""


@dataclass(frozen=True)
class Fold:
    """One judging: fit on `train`, rank for `eval_rows` without their `train` tracks, and
    compare with their `test` rows."""

    train: sp.csr_matrix
    test: sp.csr_matrix
    eval_rows: np.ndarray


@dataclass(frozen=True)
class Split:
    """A partition of the listen counts (same shape, disjoint, train + valid + test = all)."""

    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    valid_rows: np.ndarray  # users judged on validation, sorted
    test_rows: np.ndarray  # users judged on test, sorted
    kind: Literal["time", "holdout"]
    reason: str  # one line for the log: which split and why
    cold_valid: int = 0  # users with pairs in a window and nothing before it (time split)
    cold_test: int = 0
    rows: np.ndarray | None = None  # sampled: the data's row of each row here; None: all rows
    n_users: int = 0  # the users of the data it was split from (0: as many as its rows)

    def validation(self) -> Fold:
        """Model selection: fit on train, judge on the validation pairs."""
        return Fold(self.train, self.valid, self.valid_rows)

    def testing(self) -> Fold:
        """The reported figures: fit on all but the test pairs, judge on them."""
        return Fold(self._before_test, self.test, self.test_rows)

    @cached_property
    def _before_test(self) -> sp.csr_matrix:
        return (self.train + self.valid).tocsr()

    def sampled(self, max_users: int, seed: int) -> Split:
        """The split on at most `max_users` users (0: all): every judged user, and a seeded
        sample of the others. Candidates are fit and compared on it, so that their cost does
        not grow with the users; the winner alone is refit on everyone."""
        n = self.train.shape[0]
        if max_users <= 0 or n <= max_users or self.rows is not None:
            return self
        judged = np.union1d(self.valid_rows, self.test_rows)
        others = np.setdiff1d(np.arange(n), judged, assume_unique=True)
        wanted = min(max(max_users - len(judged), 0), len(others))
        picked = np.random.default_rng(seed).choice(others, wanted, replace=False)
        rows = np.union1d(judged, picked)
        return replace(
            self,
            train=self.train[rows],
            valid=self.valid[rows],
            test=self.test[rows],
            valid_rows=np.searchsorted(rows, self.valid_rows),
            test_rows=np.searchsorted(rows, self.test_rows),
            reason=(
                f"{self.reason}; candidates fit on {len(rows):,} of {n:,} users (every judged "
                f"user and a seeded sample of the others)"
            ),
            rows=rows,
            n_users=n,
        )

    def sizes(self) -> dict[str, int]:
        """The ml.model_runs figures of the split."""
        return {
            "time_split": int(self.kind == "time"),
            "train_interactions": int(self.train.nnz),
            "valid_interactions": int(self.valid.nnz),
            "test_interactions": int(self.test.nnz),
            "valid_users": len(self.valid_rows),
            "test_users": len(self.test_rows),
            "cold_valid_users": self.cold_valid,
            "cold_test_users": self.cold_test,
        }


def split(
    data: Interactions | tuple[sp.csr_matrix, np.ndarray | None], settings: Evaluation
) -> Split:
    """The split of `data` (Interactions, or counts with first-listen times aligned with
    their `.data`): by time when both windows judge `min_eval_users` users and the history
    spans `min_span_days`, else the holdout. Same data and settings, same split."""
    counts, first_seen = (data.matrix, data.first_seen) if isinstance(data, Interactions) else data
    counts = counts.tocsr()
    if first_seen is None:
        return holdout(counts, settings, "no first-listen times")
    found = time_split(counts, np.asarray(first_seen), settings)
    return found if isinstance(found, Split) else holdout(counts, settings, found)


def time_split(counts: sp.csr_matrix, first_seen: np.ndarray, settings: Evaluation) -> Split | str:
    """The time split, or why it cannot hold (one line)."""
    if counts.nnz == 0:
        return "no listens"
    start, end = int(first_seen.min()), int(first_seen.max()) + 1
    span = (end - 1 - start) / DAY
    if span < settings.min_span_days:
        return f"first listens span {span:.1f} days (needs {settings.min_span_days:g})"
    if settings.test_days > 0:  # whole days, up to the midnight after the last listen
        end = -(-end // DAY) * DAY
        test_cut = end - round(settings.test_days * DAY)
        valid_cut = test_cut - round(settings.valid_days * DAY)
    else:
        q = [1 - settings.test_share - settings.valid_share, 1 - settings.test_share]
        # a window starts after the time at its quantile: pairs sharing that time (a whole
        # history stamped at once) stay on the earlier side instead of emptying the train
        valid_cut, test_cut = (int(c) + 1 for c in np.quantile(first_seen, q, method="lower"))
    owner = _owners(counts)
    n = counts.shape[0]
    window = (first_seen >= valid_cut).astype(np.int8) + (first_seen >= test_cut)
    per_window = [np.bincount(owner[window == w], minlength=n) for w in (0, 1, 2)]
    before_valid, before_test = per_window[0], per_window[0] + per_window[1]
    judged_valid = (before_valid > 0) & (per_window[1] > 0)
    judged_test = (before_test > 0) & (per_window[2] > 0)
    n_valid, n_test = int(judged_valid.sum()), int(judged_test.sum())
    if min(n_valid, n_test) < settings.min_eval_users:
        which = "validation" if n_valid < n_test else "test"
        return (
            f"only {min(n_valid, n_test):,} users have listens both before and in the {which} "
            f"window (needs {settings.min_eval_users})"
        )
    rng = np.random.default_rng(settings.seed)
    priority = rng.permutation(n)
    valid_rows = _first(judged_valid, priority, settings.max_eval_users)
    test_rows = _first(judged_test, priority, settings.max_eval_users)
    cold_valid = int(((before_valid == 0) & (per_window[1] > 0)).sum())
    cold_test = int(((before_test == 0) & (per_window[2] > 0)).sum())
    reason = (
        f"time split: train before {_day(valid_cut)}, validation to {_day(test_cut)}, test to "
        f"{_day(end)}; {n_valid:,} users have listens on both sides of the validation cut, "
        f"{n_test:,} of the test cut ({cold_valid:,} and {cold_test:,} new users left out)"
    )
    parts = [_part(counts, owner, window == w) for w in (0, 1, 2)]
    return Split(*parts, valid_rows, test_rows, "time", reason, cold_valid, cold_test)


def holdout(counts: sp.csr_matrix, settings: Evaluation, why: str) -> Split:
    """The seeded per-user holdout; `why` the time split did not hold goes in its reason."""
    rng = np.random.default_rng(settings.seed)
    n, h = counts.shape[0], settings.holdout_per_user
    per_user = np.diff(counts.indptr)
    can_test, can_validate = per_user >= 2, per_user >= settings.min_user_tracks
    if min(int(can_validate.sum()), int(can_test.sum())) < settings.min_eval_users:
        raise NotEnoughData(
            f"only {int(can_validate.sum())} users have >= {settings.min_user_tracks} distinct "
            f"tracks and {int(can_test.sum())} >= 2; evaluation needs at least "
            f"{settings.min_eval_users} of each"
        )
    priority = rng.permutation(n)
    test_rows = _first(can_test, priority, settings.max_eval_users)
    valid_rows = _first(can_validate, priority, settings.max_eval_users)
    to_test = np.zeros(n, dtype=np.int64)
    to_test[test_rows] = np.where(can_validate[test_rows], h, 1)
    to_valid = np.zeros(n, dtype=np.int64)
    to_valid[valid_rows] = h

    owner = _owners(counts)
    # a random order within each judged user's pairs (the others hide nothing): their first
    # to_test pairs go to test, the next to_valid to validation
    hiding = np.flatnonzero((to_test + to_valid)[owner] > 0)
    of = owner[hiding]
    order = np.lexsort((rng.random(len(hiding)), of))
    ranked = of[order]
    position = np.empty(len(hiding), dtype=np.int64)
    position[order] = np.arange(len(hiding)) - np.searchsorted(ranked, ranked)
    in_test = np.zeros(counts.nnz, dtype=bool)
    in_valid = np.zeros(counts.nnz, dtype=bool)
    in_test[hiding] = position < to_test[of]
    in_valid[hiding] = ~in_test[hiding] & (position < to_test[of] + to_valid[of])
    del hiding, of, order, ranked, position
    small = int(((to_test > 0) & ~can_validate).sum())
    reason = (
        f"per-user holdout: {why}; {len(valid_rows):,} users hold out {h} pairs for validation "
        f"and {len(test_rows):,} for test (1 pair for the {small:,} with 2-"
        f"{settings.min_user_tracks - 1} tracks)"
    )
    train = _part(counts, owner, ~(in_test | in_valid))
    valid, test = _part(counts, owner, in_valid), _part(counts, owner, in_test)
    return Split(train, valid, test, valid_rows, test_rows, "holdout", reason)


def _owners(counts: sp.csr_matrix) -> np.ndarray:
    """The row of each stored pair."""
    rows = np.arange(counts.shape[0], dtype=np.int32 if counts.shape[0] < 2**31 else np.int64)
    return np.repeat(rows, np.diff(counts.indptr))


def _part(counts: sp.csr_matrix, owner: np.ndarray, keep: np.ndarray) -> sp.csr_matrix:
    """The pairs of `counts` where `keep`, same shape (no copy of the rest)."""
    n = counts.shape[0]
    indptr = np.zeros(n + 1, dtype=counts.indptr.dtype)
    np.cumsum(np.bincount(owner[keep], minlength=n), out=indptr[1:])
    return sp.csr_matrix((counts.data[keep], counts.indices[keep], indptr), shape=counts.shape)


def _first(eligible: np.ndarray, priority: np.ndarray, cap: int) -> np.ndarray:
    """At most `cap` eligible rows, those of lowest `priority` (a seeded permutation), sorted."""
    rows = np.flatnonzero(eligible)
    if len(rows) > cap:
        rows = np.sort(rows[np.argpartition(priority[rows], cap)[:cap]])
    return rows


def _day(epoch: int) -> str:
    """A cut as UTC text: the day, with the time when it is not midnight."""
    at = datetime.fromtimestamp(epoch, UTC)
    return at.strftime("%Y-%m-%d" if at.hour == at.minute == 0 else "%Y-%m-%d %H:%M")
