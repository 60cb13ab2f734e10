"""A candidate schema built by an older version of the project is found and rebuilt in full."""

import psycopg

from dbt_project import step
from dbt_project.contracts import contracted_columns, drifted_tables
from dbt_project.results import BuildResult
from moovitamix.connection_url import ConnectionURL
from moovitamix.publication import CANDIDATE, PUBLISHED, Publication
from moovitamix.settings import load_settings
from moovitamix.step import RunContext


def test_the_contracts_are_read_from_the_marts_yaml() -> None:
    contracts = contracted_columns()
    assert {"user_id", "track_id", "history_valid_from"} <= contracts["fct_listens"]
    assert "dim_users" in contracts and "fct_recommendation_uptake" in contracts


def test_a_table_built_to_another_contract_is_drift_a_missing_one_is_not(
    fresh_warehouse: ConnectionURL,
) -> None:
    contracts = {
        "fct_listens": {"user_id", "track_id", "history_valid_from"},
        "dim_users": {"user_id"},
        "dim_tracks": {"track_id"},
    }
    with psycopg.connect(fresh_warehouse.url(), autocommit=True) as conn:
        conn.execute("create schema old_marts")
        conn.execute("create table old_marts.fct_listens (user_id bigint, track_id bigint)")
        conn.execute("create table old_marts.dim_users (user_id bigint, email text)")
        conn.execute("alter table old_marts.dim_users drop column email")  # dropped: not there
        conn.execute("create table old_marts.dim_tracks (track_id bigint, legacy int)")
        drift = drifted_tables(conn, "old_marts", contracts)
        assert drift == {
            "fct_listens": "lacks history_valid_from",
            "dim_tracks": "has legacy no longer in its contract",
        }
        assert drifted_tables(conn, "no_such_schema", contracts) == {}


def test_the_daily_transform_rebuilds_a_candidate_of_another_contract_in_full(
    fresh_warehouse: ConnectionURL, monkeypatch
) -> None:
    """An upgrade that changes an incremental mart's columns costs a full build of each
    schema once, not a failed day (dbt's on_schema_change='fail')."""
    result = BuildResult("build", "run-1", success=True, seconds=1.0, nodes=[])
    calls: list[dict] = []
    monkeypatch.setattr(step, "run_build", lambda *a, **kw: calls.append(kw) or result)
    settings = load_settings({"WAREHOUSE_URL": fresh_warehouse.url()})

    def transform() -> bool:
        ctx = RunContext(
            settings, "run-1", fresh_warehouse, "http://127.0.0.1:1", True,
            publication=Publication("run-1"),
        )  # fmt: skip
        step.transform(ctx)
        return calls[-1]["full_refresh"]

    with psycopg.connect(fresh_warehouse.url(), autocommit=True) as conn:
        conn.execute(f"create schema if not exists {CANDIDATE}")
        conn.execute(
            f"create table {CANDIDATE}.fct_listens as select "
            + ", ".join(f"null::text as {c}" for c in sorted(contracted_columns()["fct_listens"]))
        )
        # the former marts, published by an earlier run: no other reason to rebuild in full
        published = f"comment on schema {CANDIDATE} is '{PUBLISHED} by run run-0'"
        conn.execute(published)
        assert transform() is False  # built to today's contract: incremental
        conn.execute(f"alter table {CANDIDATE}.fct_listens drop column history_valid_from")
        conn.execute(published)
    warned: list[str] = []
    monkeypatch.setattr(step.log, "warning", lambda msg, *args: warned.append(msg % args))
    assert transform() is True
    lacks = f"{CANDIDATE}.fct_listens lacks history_valid_from"
    assert warned == [f"{lacks}: rebuilding {CANDIDATE} in full"]
