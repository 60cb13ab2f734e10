"""Each suite on a warehouse seeded to break it: the right expectation fails, with the right
severity, and nothing else does; a clean warehouse passes everything."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from expectations.engines import Engine
from expectations.run_metrics import record_run_metrics
from expectations.suites import Stage, UnknownSuite
from expectations.thresholds import load_thresholds
from moovitamix.alerts import Alert, send_alert
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import LIVE
from tests.conftest import Webhook
from tests.expectations.conftest import Execute, Validator
from tests.expectations.seed import ledger_run, seed_clean

pytestmark = pytest.mark.integration

RUN = "20261126T100000Z-bbbbbb"
PREVIOUS = "20261125T100000Z-aaaaaa"
ALL_EXPECTATIONS = 16


@pytest.fixture
def warehouse(fresh_warehouse: ConnectionURL) -> ConnectionURL:
    seed_clean(fresh_warehouse, RUN)
    return fresh_warehouse


def _failed(outcome: object) -> set[tuple[str, str, str]]:
    return {(r.suite, r.expectation, r.severity) for r in outcome.failures}  # type: ignore[attr-defined]


def _baseline(url: ConnectionURL) -> None:
    """Yesterday's successful run, with the figures of today's clean warehouse."""
    ledger_run(url, PREVIOUS, datetime.now(UTC) - timedelta(days=1), "success")
    _record(url, PREVIOUS)


def _record(url: ConnectionURL, run_id: str) -> None:
    """The figures a validation of `run_id` records, as measured now."""
    with psycopg.connect(url.url(), autocommit=True) as conn:
        record_run_metrics(Engine(url, LIVE, conn), run_id, load_thresholds())


def test_clean_warehouse_passes_and_writes_a_row_per_expectation(
    warehouse: ConnectionURL, validate: Validator
) -> None:
    _baseline(warehouse)
    outcome = validate(warehouse, RUN, build_docs=True)
    assert outcome.ok and not outcome.failures, outcome.failures
    assert len(outcome.results) == ALL_EXPECTATIONS and not outcome.skipped
    assert set(outcome.suites) == {
        "raw.users", "raw.tracks", "raw.listen_history", "raw.ingestion",
        "marts.orphaned_listens", "marts.day_over_day", "recommendations", "play_next",
        "privacy.suppressed",
    }  # fmt: skip
    assert validate.alerts == []
    with psycopg.connect(warehouse.url()) as conn:
        rows = conn.execute(
            "select suite, expectation, severity, success, observed_value, threshold "
            "from monitoring.validation_results where run_id = %s",
            (RUN,),
        ).fetchall()
    assert len(rows) == ALL_EXPECTATIONS
    assert all(success for _, _, _, success, _, _ in rows)
    by_name = {(suite, name, severity): (obs, thr) for suite, name, severity, _, obs, thr in rows}
    observed, threshold = by_name[("marts.orphaned_listens", "orphaned_listens", "error")]
    assert observed == "0.10% (listens)" and threshold == "<= 5.00%"
    observed, _ = by_name[("marts.day_over_day", "volume_drop", "error")]
    assert "0.00% (marts.dim_users)" in observed
    # what GX validated: the checks' metrics, one row per subject
    with psycopg.connect(warehouse.url()) as conn:
        metrics = conn.execute(
            "select expectation, subject, observed, details from monitoring.check_metrics "
            "where run_id = %s and suite = 'marts.orphaned_listens'",
            (RUN,),
        ).fetchall()
    ((name, subject, share, details),) = metrics
    assert (name, subject, share) == ("orphaned_listens", "listens", pytest.approx(1 / 1001))
    assert details["all_listens"] == 1001 and details["orphaned_listens"] == 1
    # the data docs site: an index and a page per suite and per validation
    assert outcome.data_docs is not None and outcome.data_docs.is_file()
    site = outcome.data_docs.parent
    assert "raw.ingestion" in outcome.data_docs.read_text()
    assert (site / "expectations" / "raw" / "users.html").is_file()
    assert len(list((site / "validations").rglob("*.html"))) == len(outcome.suites)


def test_validating_a_run_again_replaces_its_rows(
    warehouse: ConnectionURL, validate: Validator
) -> None:
    validate(warehouse, RUN, suites=["raw.users"])
    validate(warehouse, RUN, suites=["raw.users"])
    with psycopg.connect(warehouse.url()) as conn:
        (count,) = conn.execute(  # type: ignore[misc]
            "select count(*) from monitoring.validation_results where run_id = %s", (RUN,)
        ).fetchone()
    assert count == 2


def test_row_count_below_the_api_total_is_an_error(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    sql("update raw.users set _dlt_valid_to = now() where id <= 3 and _dlt_valid_to is null")
    outcome = validate(warehouse, RUN, suites=["raw.ingestion"])
    assert _failed(outcome) == {("raw.ingestion", "row_count_matches_api_total", "error")}
    assert not outcome.ok
    (failure,) = outcome.failures
    assert failure.observed_value.startswith("3 (users)")
    users = next(s for s in failure.observed["subjects"] if s["subject"] == "users")
    assert (users["expected_rows"], users["raw_rows"], users["breach"]) == (200, 197, True)


def test_rejected_share_and_retry_storm_are_warnings(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    # 10 of 200 users rejected, their previous versions carried forward: counts still add up
    sql(
        "update monitoring.ingestion_stats set rejected = 10, carried_forward = 10 "
        "where endpoint = 'users'"
    )
    sql(
        "update monitoring.ingestion_stats set requests = 40, "
        """retries = '{"http_429": 25, "timeout": 5}'::jsonb where endpoint = 'tracks'"""
    )
    outcome = validate(warehouse, RUN, suites=["raw.ingestion"])
    assert _failed(outcome) == {
        ("raw.ingestion", "rejected_share", "warning"),
        ("raw.ingestion", "retry_storm", "warning"),
    }
    assert outcome.ok  # warnings only alert
    titles = sorted(alert.title for alert in validate.alerts)
    assert len(titles) == 2 and titles[1].startswith("retry storm")
    storm = next(a for a in validate.alerts if a.title.startswith("retry storm"))
    assert storm.severity == "warning" and storm.details["observed"].startswith("75.00% (tracks)")


def test_bad_email_and_bad_duration_are_warnings(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    sql("update raw.users set email = 'carl15-at-example.net' where id = 7")
    sql("update raw.tracks set duration = '3:61' where id = 9")
    outcome = validate(warehouse, RUN, suites=["raw.users", "raw.tracks"])
    assert _failed(outcome) == {
        ("raw.users", "email_format", "warning"),
        ("raw.tracks", "duration_format", "warning"),
    }
    email = next(r for r in outcome.failures if r.expectation == "email_format")
    assert email.observed_value == "0.50% (1 of 200 break it)"
    assert "carl15" not in str(email.observed)  # counts, never the records (PII)
    stored = list((validate.gx_dir / "uncommitted" / "validations").rglob("*.json"))
    assert stored and not any("carl15" in path.read_text() for path in stored)


def test_timestamps_in_the_future_are_caught_per_table(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    sql("update raw.listen_history set updated_at = now() + interval '2 days' where user_id = 1")
    sql("update raw.tracks set created_at = now() + interval '30 minutes' where id = 1")  # skew
    outcome = validate(warehouse, RUN, suites=["raw.users", "raw.tracks", "raw.listen_history"])
    assert _failed(outcome) == {("raw.listen_history", "timestamps_not_in_future", "warning")}


def test_orphan_spike_fails_both_levels_and_alerts_once(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    sql(
        "insert into marts.fct_orphaned_listens "
        "select g, 999999, 'unknown_track', 1 from generate_series(2, 120) as g"
    )
    outcome = validate(warehouse, RUN, suites=["marts.orphaned_listens"])
    assert _failed(outcome) == {
        ("marts.orphaned_listens", "orphaned_listens", "warning"),
        ("marts.orphaned_listens", "orphaned_listens", "error"),
    }
    assert not outcome.ok
    assert [a.severity for a in validate.alerts] == ["error"]  # the warning is implied


def test_half_the_users_gone_is_a_volume_drop_error(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    _baseline(warehouse)
    sql("delete from marts.fct_listens where user_id > 100")
    sql("delete from marts.user_genre_features where user_id > 100")
    sql("delete from marts.dim_users where user_id > 100")
    outcome = validate(warehouse, RUN, suites=["marts.day_over_day"])
    assert _failed(outcome) == {("marts.day_over_day", "volume_drop", "error")}
    (drop,) = outcome.failures
    assert "50.00% (marts.dim_users)" in drop.observed_value
    subjects = {s["subject"]: s for s in drop.observed["subjects"]}
    assert subjects["marts.dim_users"]["previous_run_id"] == PREVIOUS


def test_volume_growth_and_genre_drift_are_warnings(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    _baseline(warehouse)
    sql("insert into marts.dim_tracks select g, 60 from generate_series(101, 200) as g")
    # listeners move from rock (the most listened genre) to jazz
    sql(
        "update marts.user_genre_features set listen_share = "
        "case genre_id when 'rock' then 0.1 when 'jazz' then 0.6 else listen_share end"
    )
    outcome = validate(warehouse, RUN, suites=["marts.day_over_day"])
    assert _failed(outcome) == {
        ("marts.day_over_day", "volume_growth", "warning"),
        ("marts.day_over_day", "genre_share_drift", "warning"),
    }
    drift = next(r for r in outcome.failures if r.expectation == "genre_share_drift")
    assert drift.observed_value == "0.500 (listens by genre)"
    assert drift.observed["subjects"][0]["most_changed_genre"] in ("rock", "jazz")


def test_the_baseline_is_the_previous_successful_run(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    _baseline(warehouse)
    # a later run that failed, with half the users: never a baseline
    failed = "20261125T200000Z-cccccc"
    ledger_run(warehouse, failed, datetime.now(UTC) - timedelta(hours=12), "failed")
    sql("delete from marts.dim_users where user_id > 100")
    _record(warehouse, failed)
    outcome = validate(warehouse, RUN, suites=["marts.day_over_day"])
    assert ("marts.day_over_day", "volume_drop", "error") in _failed(outcome)
    drop = next(r for r in outcome.failures if r.expectation == "volume_drop")
    assert {s["previous_run_id"] for s in drop.observed["subjects"]} == {PREVIOUS}


def test_first_run_has_no_baseline_and_passes(
    warehouse: ConnectionURL, validate: Validator
) -> None:
    outcome = validate(warehouse, RUN, suites=["marts.day_over_day"])
    assert outcome.ok and not outcome.failures
    assert all("n/a" in r.observed_value for r in outcome.results)


def test_active_users_without_recommendations_are_an_error(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    sql("delete from recommendations.user_top_tracks where user_id in (4, 5)")
    outcome = validate(warehouse, RUN, stage=Stage.RECOMMENDATIONS)
    assert sorted({r.suite for r in outcome.results}) == ["play_next", "recommendations"]
    assert _failed(outcome) == {("recommendations", "active_users_covered", "error")}
    assert outcome.failures[0].observed["subjects"][0]["without_recommendations"] == 2


def test_a_suppressed_user_back_in_raw_or_the_marts_is_an_error(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    """privacy/: an erased user's hashed id (and e-mail) found again fails the run."""
    from privacy.subjects import EMAIL, USER_ID, subject_hash

    salt = bytes.fromhex("00112233")
    with psycopg.connect(warehouse.url()) as conn:
        (email,) = conn.execute("select email from raw.users where id = 4 limit 1").fetchone()  # type: ignore[misc]
    for kind, value in ((USER_ID, 4), (EMAIL, email.upper())):
        sql(
            "insert into privacy.suppressions values (%s, %s, 1)",
            (subject_hash(salt, kind, value), kind),
        )
    outcome = validate(warehouse, RUN, stage=Stage.DATA)
    assert _failed(outcome) == {("privacy.suppressed", "suppressed_users_absent", "error")}
    (failure,) = outcome.failures
    found = {row["subject"]: row["observed"] for row in failure.observed["subjects"]}
    assert found["raw.users"] >= 1 and found["raw.users (e-mail)"] >= 1, found
    assert found["marts.fct_listens"] == 1 and "raw._rejected" not in found, found
    assert email not in str(failure.observed) and email not in failure.observed_value


def test_catalog_tracks_without_play_next_are_an_error(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    sql("insert into marts.dim_tracks values (1000001, 60), (1000002, 60)")  # new, unplayed
    outcome = validate(warehouse, RUN, stage=Stage.RECOMMENDATIONS)
    assert _failed(outcome) == {("play_next", "catalog_tracks_covered", "error")}
    assert outcome.failures[0].observed["subjects"][0]["without_play_next"] == 2


def test_data_stage_leaves_recommendations_for_after_the_ml_step(
    warehouse: ConnectionURL, validate: Validator, sql: Execute
) -> None:
    sql("delete from recommendations.user_top_tracks")  # stale until ML publishes
    outcome = validate(warehouse, RUN, stage=Stage.DATA)
    assert "recommendations" not in outcome.suites and outcome.ok


def test_an_unknown_suite_is_refused(fresh_warehouse: ConnectionURL, validate: Validator) -> None:
    with pytest.raises(UnknownSuite, match=r"no such suite: raw\.nope"):
        validate(fresh_warehouse, RUN, suites=["raw.users", "raw.nope"])


def test_suites_whose_tables_do_not_exist_are_skipped_and_nothing_validated_fails(
    fresh_warehouse: ConnectionURL, validate: Validator
) -> None:
    """An empty warehouse is not a validated one: the outcome fails closed."""
    outcome = validate(fresh_warehouse, RUN)
    assert outcome.results == () and outcome.validated_nothing and not outcome.ok
    skipped = dict(outcome.skipped)
    assert "recommendations.user_top_tracks" in skipped["recommendations"]
    assert set(skipped) >= {"raw.users", "raw.ingestion", "marts.day_over_day"}


def test_a_check_that_cannot_run_says_so_and_fails_at_its_severity(
    warehouse: ConnectionURL, validate: Validator, sql: Execute, webhook: Webhook
) -> None:
    """Console, results table, data docs and webhook say "could not run: <reason>", never what
    the check would have found (here: not "raw row count does not match the API's total")."""
    sql("alter table monitoring.ingestion_stats rename column carried_forward to carried")
    reason = "column s.carried_forward does not exist"
    validate.alerts = _Forwarding(webhook.url)
    outcome = validate(warehouse, RUN, suites=["raw.ingestion"], build_docs=True)
    assert not outcome.ok
    failed = {r.expectation: r for r in outcome.failures}
    assert set(failed) == {"row_count_matches_api_total"}, "the other checks ran and passed"
    check = failed["row_count_matches_api_total"]
    assert (check.severity, check.success, check.could_not_run) == ("error", False, reason)
    assert check.observed_value == f"could not run: {reason}"
    assert "(1 could not run)" in outcome.summary()
    # the results table
    with psycopg.connect(warehouse.url()) as conn:
        rows = conn.execute(
            "select expectation, success, observed ? 'could_not_run', observed_value from "
            "monitoring.validation_results where run_id = %s order by expectation",
            (RUN,),
        ).fetchall()
    assert rows == [
        ("rejected_share", True, False, "0.00% (listen_history); 0.00% (tracks); 0.00% (users)"),
        ("retry_storm", True, False, "0.00% (listen_history); 0.00% (tracks); 0.00% (users)"),
        ("row_count_matches_api_total", False, True, f"could not run: {reason}"),
    ]
    with psycopg.connect(warehouse.url()) as conn:
        metrics = conn.execute(
            "select subject, observed, could_not_run from monitoring.check_metrics "
            "where run_id = %s and expectation = 'row_count_matches_api_total'",
            (RUN,),
        ).fetchall()
    assert metrics == [(None, None, reason)]
    # the webhook: one alert, saying the check could not run and why
    (body,) = webhook.bodies
    assert "check row_count_matches_api_total could not run: " + reason in body["text"]
    assert "does not match" not in body["text"]
    assert body["severity"] == "error" and body["details"]["could_not_run"] == reason
    # the data docs: the check's observed value
    assert outcome.data_docs is not None
    (page,) = (outcome.data_docs.parent / "validations" / "raw" / "ingestion").rglob("*.html")
    assert f"could not run: {reason}" in page.read_text()


class _Forwarding(list):
    """An alert sink that also POSTs each alert to a webhook, as the daily run does."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def append(self, alert: Alert) -> None:
        super().append(alert)
        assert send_alert(alert, self.url)
