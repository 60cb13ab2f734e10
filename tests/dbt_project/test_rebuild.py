"""The daily transform rebuilds fct_listens in full when many listen histories changed since the
candidate's watermark and the table outgrows the server's buffers, and says so; otherwise it
stays incremental."""

import os
from functools import partial

import psycopg
import pytest

from dbt_project import step
from dbt_project.contracts import contracted_checks, contracted_columns
from dbt_project.rebuild import REBUILD_ENV, changed_share, outgrown_buffers, rebuild_share
from dbt_project.results import BuildResult
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import CANDIDATE, PUBLISHED, Publication
from moovitamix.settings import load_settings
from moovitamix.step import RunContext

USERS = 20
VERSIONS = "staging.stg_moovitamix__listen_history_versions"


def _candidate_after(conn: psycopg.Connection, changed: int) -> None:
    """A published candidate built on Jan 2, and `changed` of USERS histories with a new
    version since (one of them a deleted user's: its only version ended)."""
    conn.execute(f"drop schema if exists {CANDIDATE} cascade")
    conn.execute(f"create schema {CANDIDATE}")
    columns = ", ".join(
        f"null::{'timestamptz' if c == 'history_valid_from' else 'text'} as {c}"
        for c in sorted(contracted_columns()["fct_listens"])
    )
    conn.execute(f"create table {CANDIDATE}.fct_listens as select {columns}")
    conn.execute(f"update {CANDIDATE}.fct_listens set history_valid_from = '2026-01-02'")
    for name in contracted_checks()["fct_listens"]:  # compared by name
        conn.execute(f"alter table {CANDIDATE}.fct_listens add constraint {name} check (true)")
    conn.execute(f"comment on schema {CANDIDATE} is '{PUBLISHED} by run run-0'")
    conn.execute("create schema if not exists staging")
    conn.execute(f"drop table if exists {VERSIONS}")
    conn.execute(
        f"create table {VERSIONS} (user_id bigint, valid_from timestamptz,"
        " valid_to timestamptz, is_current boolean)"
    )
    for user in range(USERS):
        edited = user < changed
        ended = "'2026-01-03'" if edited else "null"
        conn.execute(f"insert into {VERSIONS} values ({user}, '2026-01-01', {ended}, {not edited})")
        if edited and user > 0:  # user 0 was deleted: no new version
            conn.execute(f"insert into {VERSIONS} values ({user}, '2026-01-03', null, true)")


def _transform(warehouse: ConnectionURL, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, str]:
    """The transform step's details, and the switch as dbt saw it (dbt itself not run)."""
    seen: list[str] = []

    def build(*args: object, **kwargs: object) -> BuildResult:
        seen.append(os.environ.get(REBUILD_ENV, ""))
        return BuildResult("build", "run-1", success=True, seconds=1.0, nodes=[])

    monkeypatch.setattr(step, "run_build", build)
    settings = load_settings({"WAREHOUSE_URL": warehouse.url()})
    ctx = RunContext(
        settings, "run-1", warehouse, "http://127.0.0.1:1", True, publication=Publication("run-1")
    )
    report = step.transform(ctx)
    assert REBUILD_ENV not in os.environ  # only for the build
    return report.details, seen[-1]


def test_many_changed_histories_rebuild_fct_listens_alone_once_it_outgrows_the_buffers(
    fresh_warehouse: ConnectionURL, monkeypatch: pytest.MonkeyPatch
) -> None:
    below, above = 1, USERS // 2
    assert below / (USERS - 1) <= rebuild_share() < above / (USERS - 1)
    with psycopg.connect(fresh_warehouse.url(), autocommit=True) as conn:
        _candidate_after(conn, below)
        # the deleted user's history counts as changed but no longer as a current one
        assert changed_share(conn, CANDIDATE) == pytest.approx(below / (USERS - 1))
    details, switch = _transform(fresh_warehouse, monkeypatch)
    assert (switch, details["listens_rebuilt_at_share"]) == ("", None)
    assert details["full_refresh"] is False

    with psycopg.connect(fresh_warehouse.url(), autocommit=True) as conn:
        _candidate_after(conn, above)
        assert outgrown_buffers(conn, CANDIDATE) is None  # tiny: the server's buffers hold it
        size, buffers = outgrown_buffers(conn, CANDIDATE, buffer_bytes=1) or (0, 0)
        assert size > buffers == 1
    # the same share on a table the server's buffers hold: rewritten in place
    details, switch = _transform(fresh_warehouse, monkeypatch)
    assert (switch, details["listens_rebuilt_at_share"]) == ("", None)

    # buffers of one byte, which any table outgrows (the candidate as it was: the step above
    # marked it built and unpublished, which a next run rebuilds in full anyway)
    monkeypatch.setattr(step, "outgrown_buffers", partial(outgrown_buffers, buffer_bytes=1))
    with psycopg.connect(fresh_warehouse.url(), autocommit=True) as conn:
        _candidate_after(conn, above)
    infos: list[str] = []
    monkeypatch.setattr(step.log, "info", lambda msg, *args: infos.append(msg % args))
    details, switch = _transform(fresh_warehouse, monkeypatch)
    share = above / (USERS - 1)
    assert switch == "1"
    assert details["listens_rebuilt_at_share"] == pytest.approx(share)
    assert details["full_refresh"] is False  # the other marts stay incremental
    assert f"{100 * share:.0f}% of the listen histories changed since {CANDIDATE}" in infos[0]
    assert "outgrows the server's buffers" in infos[0]


def test_nothing_to_measure_leaves_the_choice_to_dbt(fresh_warehouse: ConnectionURL) -> None:
    with psycopg.connect(fresh_warehouse.url(), autocommit=True) as conn:
        assert changed_share(conn, "no_such_schema") is None
        assert outgrown_buffers(conn, "no_such_schema") is None
        _candidate_after(conn, 3)
        conn.execute(f"delete from {CANDIDATE}.fct_listens")  # empty: dbt builds it in full
        assert changed_share(conn, CANDIDATE) is None
        conn.execute(f"drop table {VERSIONS}")  # staging not built yet
        assert changed_share(conn, CANDIDATE) is None
