"""A candidate schema built by an older version of the project is found and rebuilt in full."""

import psycopg
import yaml

from dbt_project import step
from dbt_project.contracts import (
    ENFORCED_TAG,
    MARTS_YML,
    contracted_checks,
    contracted_columns,
    drifted_tables,
    mart_tests,
    proven_tests,
)
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
        for name in contracted_checks()["fct_listens"]:  # compared by name
            conn.execute(f"alter table {CANDIDATE}.fct_listens add constraint {name} check (true)")
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


def test_a_table_without_a_check_of_its_contract_is_drift(fresh_warehouse: ConnectionURL) -> None:
    """An incremental mart keeps the rows of earlier builds: one built before a check was
    declared is rebuilt in full, so that the check (and the tests it replaces) holds for all."""
    with psycopg.connect(fresh_warehouse.url(), autocommit=True) as conn:
        conn.execute("create schema old_checks")
        conn.execute("create table old_checks.fct_listens (n int constraint ck_old check (n > 0))")
        drift = drifted_tables(
            conn, "old_checks", {"fct_listens": {"n"}}, {"fct_listens": {"ck_new"}}
        )
        assert drift == {
            "fct_listens": "lacks check ck_new; has check ck_old no longer in its contract"
        }
        assert drifted_tables(conn, "old_checks", {"fct_listens": {"n"}}) == {}  # columns only
    assert all(
        constraint.get("name")  # compared by name: Postgres' own names would not match
        for model in yaml.safe_load(MARTS_YML.read_text())["models"]
        for constraint in model.get("constraints") or []
        if constraint["type"] == "check"
    )
    assert {"ck_fct_listens_counts", "ck_fct_listens_arrays"} <= contracted_checks()["fct_listens"]


def test_exactly_the_tests_that_constraints_prove_are_tagged() -> None:
    """A Postgres build leaves the tagged tests out: a tag without its constraint would leave
    a property unchecked, a proven test without the tag scans a table for nothing."""
    tagged = {t.label for t in mart_tests() if ENFORCED_TAG in t.tags}
    assert tagged == {t.label for t in proven_tests()}
    assert {"fct_listens.*: unique_combination_of_columns"} <= {
        label.split(" {")[0] for label in tagged
    }


def test_what_a_constraint_proves(tmp_path) -> None:
    path = tmp_path / "marts.yml"
    path.write_text(
        """
models:
  - name: m
    constraints:
      - {type: primary_key, columns: [a, b]}
      - type: foreign_key
        columns: [a]
        to: ref('d')
        to_columns: [a]
      - type: check
        expression: >
          a >= 1 and (b > 0 or c) and d between 0 and a and (d > 0) = (e is not null)
          and e <= 5
    data_tests:
      - unique_combination_of_columns: {arguments: {combination_of_columns: [b, a]}}
      - unique_combination_of_columns: {arguments: {combination_of_columns: [a, c]}}
      - expression_is_true: {arguments: {expression: "b > 0 or c"}}
      - expression_is_true: {arguments: {expression: "(d > 0) = (e is not null)"}}
      - expression_is_true: {arguments: {expression: "e <= 5"}}
      - expression_is_true: {arguments: {expression: "d between 0"}}
    columns:
      - name: a
        data_tests:
          - not_null
          - relationships: {arguments: {to: "ref('d')", field: a}}
          - relationships: {arguments: {to: "ref('x')", field: a}}
          - accepted_range: {arguments: {min_value: 1}}
          - accepted_range: {arguments: {min_value: 1, inclusive: false}}
      - {name: b, data_tests: [not_null, unique]}
      - {name: c, constraints: [{type: not_null}], data_tests: [not_null]}
      - {name: d, constraints: [{type: not_null}], data_tests: [not_null]}
      - {name: e, data_tests: [not_null]}
"""
    )
    assert sorted(t.label for t in proven_tests(path)) == [
        "m.*: expression_is_true {'expression': '(d > 0) = (e is not null)'}",
        "m.*: expression_is_true {'expression': 'b > 0 or c'}",
        "m.*: unique_combination_of_columns {'combination_of_columns': ['b', 'a']}",
        "m.a: accepted_range {'min_value': 1}",
        "m.a: not_null",
        "m.a: relationships {'to': \"ref('d')\", 'field': 'a'}",
        "m.b: not_null",
        "m.c: not_null",
        "m.d: not_null",
    ]  # not: `e <= 5` (e may be null: the check passes it, the test fails it), a half of a
    # `between`, a foreign key to another table, an exclusive range, `b` unique alone
