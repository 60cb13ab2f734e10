import numpy as np
import pytest

from ml.intervals import Interval, bootstrap_means, difference, interval, intervals


def test_small_cases_by_hand() -> None:
    # two users, 0 and 1: a resample's mean is 0, 1/2 or 1 with chances 1/4, 1/2, 1/4, so over
    # 1000 resamples the 2.5% and 97.5% quantiles are 0 and 1
    assert interval(np.array([0.0, 1.0])) == Interval(0.5, 0.0, 1.0)
    assert interval(np.array([3.0, 3.0, 3.0])) == Interval(3.0, 3.0, 3.0)
    assert interval(np.array([2.0])) == Interval(2.0, 2.0, 2.0)
    empty = interval(np.array([]))
    assert np.isnan(empty.mean) and np.isnan(empty.low) and np.isnan(empty.high)
    # a NaN (metric undefined for that user) is left out, not counted as 0
    assert interval(np.array([1.0, np.nan, 1.0])) == Interval(1.0, 1.0, 1.0)
    assert str(Interval(0.5, 0.25, 0.75)) == "0.5000 [0.2500, 0.7500]"
    assert Interval(0.1, 0.05, 0.2).excludes(0.0) and not Interval(0.0, -0.1, 0.1).excludes()


def test_resamples_draw_users_with_replacement() -> None:
    """Each resample mean is the mean of n values drawn from the users: with values 0 and
    1 at rates 3/4 and 1/4, the resample means average 1/4 with the binomial spread."""
    values = np.r_[np.zeros(300), np.ones(100)]
    means = bootstrap_means(values[:, None], resamples=4000, seed=3)[:, 0]
    assert means.mean() == pytest.approx(0.25, abs=0.002)
    assert means.std() == pytest.approx(np.sqrt(0.25 * 0.75 / 400), rel=0.05)
    again = bootstrap_means(values[:, None], resamples=4000, seed=3)
    np.testing.assert_array_equal(again[:, 0], means)  # seeded


def test_small_chunks_change_nothing_but_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunking bounds memory; with one resample per chunk the interval is still right."""
    values = np.random.default_rng(1).random(500)
    wide = interval(values, seed=4)
    monkeypatch.setattr("ml.intervals.CHUNK_VALUES", 1)
    narrow = interval(values, seed=4)
    assert narrow.mean == wide.mean
    assert narrow.low == pytest.approx(wide.low, abs=0.01)
    assert narrow.high == pytest.approx(wide.high, abs=0.01)


@pytest.mark.parametrize(
    ("draw", "true_mean"),
    [
        (lambda rng, n: rng.exponential(1.0, n), 1.0),  # skewed, like per-user recall
        (lambda rng, n: (rng.random(n) < 0.1).astype(float), 0.1),  # hit or miss
    ],
)
def test_the_interval_covers_the_true_mean_at_about_the_nominal_rate(draw, true_mean) -> None:
    rng = np.random.default_rng(12)
    covered = [
        not interval(draw(rng, 300), resamples=400, seed=seed).excludes(true_mean)
        for seed in range(300)
    ]
    # 95% nominal; over 300 samples the rate's own standard error is ~1.3%
    assert 0.91 <= np.mean(covered) <= 0.99


def test_a_planted_difference_is_found_and_a_zero_one_is_not() -> None:
    rng = np.random.default_rng(5)
    found, false_alarms = 0, 0
    for seed in range(100):
        ease = rng.random(400)  # how easy each user is: shared by both models
        a = np.clip(ease + rng.normal(0, 0.1, 400), 0, 1)
        better = np.clip(ease + 0.05 + rng.normal(0, 0.1, 400), 0, 1)
        same = np.clip(ease + rng.normal(0, 0.1, 400), 0, 1)
        found += difference(better, a, resamples=400, seed=seed).excludes(0.0)
        false_alarms += difference(same, a, resamples=400, seed=seed).excludes(0.0)
    assert found >= 95  # a 0.05 gain with per-user noise 0.14: found nearly every time
    assert false_alarms <= 10  # about 5 expected at the 95% level


def test_pairing_removes_what_users_share() -> None:
    """a and b move together over users: the paired interval of a - b is far narrower than
    the gap between their own intervals allows, and it is the interval of a - b itself."""
    rng = np.random.default_rng(6)
    ease = rng.random(500)
    a, b = ease + 0.01 + rng.normal(0, 0.01, 500), ease + rng.normal(0, 0.01, 500)
    paired = difference(a, b, seed=2)
    apart_a, apart_b = interval(a, seed=2), interval(b, seed=3)
    assert paired.excludes(0.0) and not apart_a.low > apart_b.high  # separately: overlap
    assert paired.high - paired.low < (apart_a.high - apart_a.low) / 5
    assert paired == interval(a - b, seed=2)
    with pytest.raises(ValueError, match="same users"):
        difference(a, b[:-1])


def test_several_metrics_share_the_resamples() -> None:
    values = np.random.default_rng(7).random(200)
    both = intervals({"x": values, "twice": 2 * values}, seed=1)
    assert both["twice"].low == pytest.approx(2 * both["x"].low)
    assert both["twice"].high == pytest.approx(2 * both["x"].high)
    alone = interval(values, seed=1)
    assert (both["x"].low, both["x"].high) == pytest.approx((alone.low, alone.high), rel=1e-12)
