"""Write-audit-publish (moovitamix/publication.py) on a real Postgres: the swap is one
transaction, a failure anywhere in it changes nothing, and the candidate's state decides
whether the next build starts over."""

from __future__ import annotations

import threading

import psycopg
import pytest

from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import (
    BUILDING,
    CANDIDATE,
    PUBLISHED,
    UNPUBLISHED,
    Publication,
    PublishFailed,
    Relations,
    discard,
    mark_built,
    prepare_candidate,
    publish,
    schema_state,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def _sql(url: ConnectionURL, *statements: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url.url(), autocommit=True) as conn:
        rows: list[tuple[object, ...]] = []
        for statement in statements:
            cur = conn.execute(statement)
            rows = cur.fetchall() if cur.description else []
        return rows


def _day(url: ConnectionURL, schema: str, users: int) -> None:
    _sql(
        url,
        f"drop table if exists {schema}.dim_users",
        f"create table {schema}.dim_users as "
        f"select g as user_id from generate_series(1, {users}) as g",
    )


def _state(url: ConnectionURL, schema: str) -> str | None:
    with psycopg.connect(url.url()) as conn:
        return schema_state(conn, schema)


def test_relations_map_schemas_and_tables() -> None:
    rel = Relations(
        schemas={"marts": CANDIDATE}, tables={"recommendations.x": "recommendations.x__new"}
    )
    assert rel("marts.dim_users") == "marts_candidate.dim_users"
    assert rel("raw.users") == "raw.users"
    assert rel("recommendations.x") == "recommendations.x__new"
    assert rel("marts") == CANDIDATE
    assert Relations()("marts.dim_users") == "marts.dim_users"


def test_a_published_day_swaps_the_schemas_and_runs_the_parts(
    fresh_warehouse: ConnectionURL,
) -> None:
    url = fresh_warehouse
    _day(url, "marts", 10)  # yesterday, published
    assert prepare_candidate(url, "run-2") is False  # a never-used candidate: nothing to redo
    assert _state(url, CANDIDATE) == BUILDING
    _day(url, CANDIDATE, 12)
    mark_built(url, "run-2")
    publication = Publication("run-2")
    done: list[str] = []
    publication.stage(
        "extra",
        lambda conn: {"rows": conn.execute("select count(*) from marts.dim_users").fetchone()[0]},
        tables={"recommendations.t": "recommendations.t__new"},
        after_commit=lambda: done.append("after"),
    )
    assert publication.relations("recommendations.t") == "recommendations.t__new"

    figures = publish(url, publication)

    # inside the transaction, `marts` already was the new one
    assert figures["extra"] == {"rows": 12}
    assert done == ["after"]
    assert _sql(url, "select count(*) from marts.dim_users") == [(12,)]
    assert _sql(url, f"select count(*) from {CANDIDATE}.dim_users") == [(10,)]
    assert _state(url, "marts") == PUBLISHED
    # the next run builds over yesterday's publication: incremental, no full refresh
    assert prepare_candidate(url, "run-3") is False


def test_a_failure_inside_the_publish_changes_nothing(fresh_warehouse: ConnectionURL) -> None:
    url = fresh_warehouse
    _day(url, "marts", 10)
    prepare_candidate(url, "run-2")
    _day(url, CANDIDATE, 5)
    mark_built(url, "run-2")
    publication = Publication("run-2")

    def broken(conn: psycopg.Connection) -> dict[str, object]:
        conn.execute("select 1 / 0")
        return {}

    publication.stage("recommendations", broken)
    with pytest.raises(PublishFailed, match=r"division by zero.*yesterday's marts"):
        publish(url, publication)
    assert _sql(url, "select count(*) from marts.dim_users") == [(10,)]
    assert _state(url, CANDIDATE) == UNPUBLISHED
    # what a failed run left is not trusted: the next one rebuilds it in full
    assert prepare_candidate(url, "run-3") is True


def test_only_a_complete_build_is_published(fresh_warehouse: ConnectionURL) -> None:
    url = fresh_warehouse
    _day(url, "marts", 10)
    prepare_candidate(url, "run-2")  # building, never marked built (transform failed)
    _day(url, CANDIDATE, 3)
    with pytest.raises(PublishFailed, match="not a complete build"):
        publish(url, Publication("run-2"))
    assert _sql(url, "select count(*) from marts.dim_users") == [(10,)]
    assert prepare_candidate(url, "run-3") is True


def test_a_reader_sees_one_whole_day_or_the_other(fresh_warehouse: ConnectionURL) -> None:
    url = fresh_warehouse
    _day(url, "marts", 10)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(url.url(), autocommit=True) as conn:
            while not stop.is_set():
                (count,) = conn.execute("select count(*) from marts.dim_users").fetchone() or (0,)
                seen.add(int(count))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for run, users in (("run-2", 20), ("run-3", 30), ("run-4", 40)):
            prepare_candidate(url, run)
            _day(url, CANDIDATE, users)
            mark_built(url, run)
            publish(url, Publication(run))
        # let the reader query once more after the last publish before it stops
        wait_until(lambda: 40 in seen, "the reader to read the last publish")
    finally:
        stop.set()
        reader.join()
    assert seen <= {10, 20, 30, 40} and 40 in seen


def test_a_reader_holding_a_lock_makes_the_publish_give_up_cleanly(
    fresh_warehouse: ConnectionURL,
) -> None:
    url = fresh_warehouse
    _day(url, "marts", 10)
    _sql(url, "create table recommendations.t (x int)")
    prepare_candidate(url, "run-2")
    _day(url, CANDIDATE, 20)
    mark_built(url, "run-2")
    publication = Publication("run-2")

    def replace_table(conn: psycopg.Connection) -> dict[str, object]:
        conn.execute("drop table recommendations.t")  # as the recommendations swap does
        return {}

    publication.stage("recommendations", replace_table)
    with psycopg.connect(url.url()) as reader:
        reader.execute("select * from recommendations.t")  # an open transaction holds the table
        with pytest.raises(PublishFailed, match=r"gave up after waiting 0\.5s"):
            publish(url, publication, lock_timeout_s=0.5)
    assert _sql(url, "select count(*) from marts.dim_users") == [(10,)]


def test_discard_drops_what_was_staged(fresh_warehouse: ConnectionURL) -> None:
    url = fresh_warehouse
    _sql(url, "create table recommendations.t__new (x int)")
    publication = Publication("run-2")
    publication.stage(
        "recommendations",
        lambda conn: {},
        discard=lambda conn: conn.execute("drop table recommendations.t__new"),
    )
    discard(url, publication)
    assert _sql(url, "select to_regclass('recommendations.t__new')") == [(None,)]
