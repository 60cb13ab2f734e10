"""Erasure on a small warehouse of stand-in tables (privacy/erasure.py): the suppression list
holds hashes only and drops the user on ingestion (by id, by e-mail, also a record that would be
quarantined); an erasure killed half way resumes at the next store and ends as a clean one; run
again it removes nothing more and reports the same; the analyst may not erase."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from ingestion.moovitamix_source.contract import LISTEN_HISTORY, TRACKS, USERS, Checker, Tables
from moovitamix.connection_url import ConnectionURL
from moovitamix.roles import ANALYST, LOADER, ML, PRIVACY, as_role, ensure_roles
from moovitamix.settings import load_settings
from privacy import ErasureFailed
from privacy.erasure import erase_request, process_requests, request_erasure
from privacy.subjects import load_suppression

pytestmark = pytest.mark.integration
USER, OTHER, EMAIL = 4242, 4343, "Forget.Me@Example.org"
COUNT = sql.SQL("select count(*) from {}")


def _as(url: ConnectionURL, role: str) -> psycopg.Connection:
    return psycopg.connect(as_role(url, role).url(), autocommit=True)


@pytest.fixture
def warehouse(warehouse_env: ConnectionURL) -> ConnectionURL:
    """Stand-ins of raw (users, items, the quarantine) and the lists, with the user and another."""
    ensure_roles(warehouse_env)
    with _as(warehouse_env, LOADER) as conn:
        conn.execute("create table raw.users (id bigint, email text)")
        conn.execute("create table raw.listen_history__items (user_id bigint, track_id bigint)")
        conn.execute("create table raw._rejected (endpoint text, record_key text, payload text)")
        conn.execute(
            "insert into raw.users values (%s, %s), (%s, %s), (%s, 'keep@example.org')",
            (USER, EMAIL, USER, f" {EMAIL.lower()} ", OTHER),
        )
        conn.execute(
            "insert into raw.listen_history__items values (%s, 1), (%s, 2), (%s, 1)",
            (USER, USER, OTHER),
        )
        conn.execute(
            "insert into raw._rejected values ('users', %s, %s), ('users', null, %s),"
            " ('listen_history', %s, '{\"user_id\": 4343}'), ('tracks', '4242', '[1, 2]')",
            (
                str(USER),
                f'{{"id": {USER}, "email": 7}}',
                f'{{"id": "x", "email": "{EMAIL.upper()}"}}',
                str(OTHER),
            ),
        )
    with _as(warehouse_env, ML) as conn:
        conn.execute("create table recommendations.user_top_tracks (user_id bigint, track_id int)")
        conn.execute(
            "insert into recommendations.user_top_tracks values (%s, 9), (%s, 9)", (USER, OTHER)
        )
    return warehouse_env


def _counts(url: ConnectionURL) -> dict[str, int]:
    with psycopg.connect(url.url()) as conn:
        return {
            table: conn.execute(COUNT.format(sql.Identifier(*table.split(".")))).fetchone()[0]  # type: ignore[index]
            for table in (
                "raw.users", "raw.listen_history__items", "raw._rejected",
                "recommendations.user_top_tracks",
            )
        }  # fmt: skip


def test_suppression_holds_hashes_only_and_drops_the_user_before_anything_is_kept(
    warehouse: ConnectionURL,
) -> None:
    with _as(warehouse, PRIVACY) as conn:
        request_id = request_erasure(conn, USER, "ticket-1")
        erase_request(conn, request_id)
    with _as(warehouse, LOADER) as conn:
        suppression = load_suppression(conn)
        stored = [r[0] for r in conn.execute("select subject_hash from privacy.suppressions")]
    assert len(stored) == 2 and all(len(h) == 64 for h in stored), "the id and one e-mail"
    assert suppression.user_id(USER) and suppression.user_id(str(USER))
    assert suppression.email(EMAIL.upper()) and suppression.email(f" {EMAIL}")
    assert not suppression.user_id(OTHER) and not suppression.email("keep@example.org")

    served = [
        {"id": USER, "first_name": "A", "last_name": "B", "email": EMAIL, "gender": "x",
         "favorite_genres": "", "created_at": "2025-01-01T00:00:00", "updated_at":
         "2025-01-01T00:00:00"},
        {"id": USER, "email": 12},  # would be quarantined
        {"id": 99, "first_name": "A", "last_name": "B", "email": EMAIL.lower(), "gender": "x",
         "favorite_genres": "", "created_at": "2025-01-01T00:00:00", "updated_at":
         "2025-01-01T00:00:00"},  # the same person under another id: by e-mail
        {"id": OTHER, "email": 13},  # someone else's broken record: quarantined as ever
    ]  # fmt: skip
    checker, out = Checker(USERS, "run-1", 64 * 1024, suppression=suppression), Tables()
    keys = checker.page(1, served, False, out)
    assert keys == [USER, USER, 99, OTHER], "every record counts towards the read's total"
    assert checker.suppressed == 3 and checker.rejected == 1 and out.records == []
    assert [r["record_key"] for r in out.rejected] == [str(OTHER)]
    history = [{"user_id": USER, "items": [1], "created_at": "2025-01-01T00:00:00",
                "updated_at": "2025-01-01T00:00:00"}]  # fmt: skip
    checker, out = Checker(LISTEN_HISTORY, "run-1", 64 * 1024, suppression=suppression), Tables()
    checker.page(1, history, False, out)
    assert checker.suppressed == 1 and out.records == [] and out.items == []
    track = Checker(TRACKS, "run-1", 64 * 1024, suppression=suppression)
    track.page(1, [{"id": USER}], False, Tables())
    assert track.suppressed == 0, "a track with the same number is no user"


def test_a_killed_erasure_resumes_and_a_second_run_removes_nothing_more(
    warehouse: ConnectionURL,
) -> None:
    calls: list[int] = []

    def killed(subject: object) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the process dies here: after the tables, before the end
        return 0

    with _as(warehouse, PRIVACY) as conn:
        request_id = request_erasure(conn, USER, "ticket-2")
        with pytest.raises(KeyboardInterrupt):
            erase_request(conn, request_id, {"model files": killed})
        status, user_id = conn.execute(
            "select status, user_id from monitoring.erasure_requests"
        ).fetchone()  # type: ignore[misc]
        assert (status, user_id) == ("running", USER), "still pending, resumable"
    assert _counts(warehouse) == {
        "raw.users": 1, "raw.listen_history__items": 1, "raw._rejected": 2,
        "recommendations.user_top_tracks": 1,
    }  # fmt: skip
    done = process_requests(warehouse, load_settings())
    assert [d.request_id for d in done] == [request_id]
    removed = done[0].removed
    assert removed["raw.users"] == 2 and removed["raw._rejected"] == 2
    assert removed["raw.listen_history__items"] == 2
    assert removed["recommendations.user_top_tracks"] == 1
    assert removed["privacy.suppressions"] == 2
    with _as(warehouse, PRIVACY) as conn:
        again = erase_request(conn, request_id)
        (audit,) = conn.execute(
            "select status, removed_by_store, erased_by, subject_hash from monitoring.erasure_audit"
        ).fetchall()
        (plain,) = conn.execute("select user_id from monitoring.erasure_requests").fetchone()  # type: ignore[misc]
    assert again.removed == removed, "run twice: the same report, nothing more removed"
    assert audit[0] == "done" and audit[1] == removed and audit[2] == PRIVACY
    assert plain is None and str(USER) not in str(audit)
    assert _counts(warehouse)["raw.users"] == 1


def test_the_analyst_may_not_erase(warehouse: ConnectionURL) -> None:
    with _as(warehouse, ANALYST) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("insert into monitoring.erasure_requests (user_id) values (1)")
    with _as(warehouse, ANALYST) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select * from monitoring.erasure_requests")
    with _as(warehouse, ANALYST) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select * from privacy.suppressions")
    with _as(warehouse, PRIVACY) as conn:
        request_erasure(conn, USER, "ticket-3")
    with pytest.raises(ErasureFailed, match="mvx_analyst may not erase"):
        process_requests(warehouse, load_settings(), role=ANALYST)
    assert _counts(warehouse)["raw.users"] == 3
    with _as(warehouse, ANALYST) as conn:  # the audit, without PII, is the analyst's to read
        assert conn.execute("select status from monitoring.erasure_audit").fetchall() == [
            ("pending",)
        ]
