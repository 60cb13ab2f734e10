"""dbt build on real ingested data: what the marts hold, idempotence, day-2 incremental
behaviour, the analysts' queries and the docs (see dbt_helpers.Scenario for the steps)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

import dbt_project.__main__ as cli
from dbt_project.checked_loads import DETAIL, newest_load
from dbt_project.contracts import proven_tests
from dbt_project.rebuild import rebuild_share
from dbt_project.results import NodeResult
from dbt_project.runner import PROJECT_DIR, run_build
from ingestion.raw_tables import RAW_INDEXES
from moovitamix.run_context import new_run_id
from moovitamix.run_ledger import RunLedger
from moovitamix.settings import load_settings
from moovitamix.warehouse import open_warehouse
from tests.dbt_project.dbt_helpers import (
    INCOMPLETE_TRACK_ID,
    INCOMPLETE_USER_ID,
    MARTS,
    Scenario,
    add_elements_written_twice,
    remove_load,
)
from tests.system_postgres import free_port
from tests.waiting import wait_until

# on the embedded Postgres and the distribution's own (tests/conftest.py: pg_server)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.pg_servers("embedded", "system"),
]


def _items(api: dict, users: set[int] | None = None) -> list[tuple[int, int]]:
    return [
        (record["user_id"], track_id)
        for record in api["listen_history"]
        if users is None or record["user_id"] in users
        for track_id in record["items"] or []
    ]


def test_day1_build_passes_every_test_including_unit_tests(scenario: Scenario) -> None:
    build = scenario.day1.build
    assert build.success, build.summary()
    kinds = Counter(n.resource_type for n in build.nodes)
    assert kinds["unit_test"] >= 6
    # the marts' tests that their constraints prove are left out on Postgres
    assert kinds["test"] >= 60
    ran = {n.name for n in build.nodes if n.resource_type == "test"}
    assert "unique_combination_of_columns_fct_listens_user_id__track_id" not in ran
    assert "unique_combination_of_columns_bridge_track_genres_track_id__position" in ran
    assert {n.name for n in build.models} >= set(MARTS)
    assert not build.failed


def test_marts_match_what_the_api_served(scenario: Scenario) -> None:
    api = scenario.day1.api
    counts = dict(
        scenario.query(
            "select 'users', count(*) from marts.dim_users union all "
            "select 'tracks', count(*) from marts.dim_tracks union all "
            "select 'pii', count(*) from marts.dim_users_pii"
        )
    )
    # the end state is day 2's: compare with the API of that day
    api2 = scenario.day2.api
    assert counts == {"users": len(api2["users"]), "tracks": len(api2["tracks"]),
                      "pii": len(api2["users"])}  # fmt: skip
    # every listen the API served is either in fct_listens or an orphan, exactly once
    listens, orphans = scenario.query(
        "select (select sum(listen_count) from marts.fct_listens),"
        " (select coalesce(sum(listen_count), 0) from marts.fct_orphaned_listens)"
    )[0]
    assert listens + orphans == len(_items(api2))
    served_tracks = {t["id"] for t in api2["tracks"]}
    expected_orphans = sum(1 for _, t in _items(api2) if t not in served_tracks)
    assert orphans == expected_orphans
    assert len(api["users"]) == scenario.day1.build.rows("dim_users")


def test_emails_are_trimmed_lowercased_and_kept_out_of_dim_users(scenario: Scenario) -> None:
    columns = {
        r[0]
        for r in scenario.query(
            "select column_name from information_schema.columns "
            "where table_schema = 'marts' and table_name = 'dim_users'"
        )
    }
    assert not columns & {"email", "first_name", "last_name"}
    api_emails = {u["id"]: u["email"].strip().lower() for u in scenario.day2.api["users"]}
    assert dict(scenario.query("select user_id, email from marts.dim_users_pii")) == api_emails


def test_genres_are_canonical_and_unknown_labels_kept(scenario: Scenario) -> None:
    genres = {r[0]: (r[1], r[2]) for r in scenario.query("select * from marts.dim_genres")}
    assert genres["hip-hop"] == ("Hip Hop", True)
    assert genres["r-and-b"] == ("R&B", True)
    assert sum(known for _, known in genres.values()) == 17
    # the edited track's "Polka / rock": an unknown genre, then rock
    assert genres["polka"] == ("Polka", False)
    bridge = scenario.query(
        "select genre_id, position from marts.bridge_track_genres where track_id = %s "
        "order by position",
        (scenario.edited_track_id,),
    )
    assert bridge == [("polka", 0), ("rock", 1)]
    # every served favorite genre is a known genre
    favorites = scenario.query(
        "select count(*) from marts.dim_users as u join marts.dim_genres as g "
        "on u.favorite_genre_id = g.genre_id where not g.is_known_genre"
    )
    assert favorites == [(0,)]


def test_unparsable_duration_is_null_and_counted(scenario: Scenario) -> None:
    duration = scenario.query(
        "select duration_seconds, duration_text from marts.dim_tracks where track_id = %s",
        (scenario.edited_track_id,),
    )
    assert duration == [(None, "abc")]
    warned = {n.name: n.failures for n in scenario.day2.build.warned}
    assert warned.get("unparsable_track_durations") == 1
    parsed = dict(scenario.query("select track_id, duration_seconds from marts.dim_tracks"))
    for track in scenario.day2.api["tracks"]:
        if track["id"] != scenario.edited_track_id:
            minutes, seconds = track["duration"].split(":")
            assert parsed[track["id"]] == int(minutes) * 60 + int(seconds)


def test_second_build_without_new_data_changes_nothing(scenario: Scenario) -> None:
    """Also: versions of loads that did not complete stay invisible."""
    assert scenario.rebuild.digests == scenario.day1.digests
    assert scenario.rebuild.listens == scenario.day1.listens
    assert scenario.rebuild.build.rows("fct_listens") == 0
    assert scenario.day1.build.rows("fct_listens") == len(scenario.day1.listens)
    ghosts = scenario.query(
        "select (select count(*) from marts.dim_tracks where track_id = %s),"
        " (select count(*) from marts.dim_users where user_id = %s)",
        (INCOMPLETE_TRACK_ID, INCOMPLETE_USER_ID),
    )
    assert ghosts == [(0, 0)]


def test_day2_merges_only_the_users_whose_history_changed(scenario: Scenario) -> None:
    before, after = scenario.day1, scenario.day2
    changed = {u for u, digest in after.histories.items() if before.histories.get(u) != digest}
    assert changed, "the simulator's day 1 should grow some histories"
    merged = {key for key, row in after.listens.items() if row[-1] == after.run_id}
    assert merged == {key for key in after.listens if key[0] in changed}
    assert after.build.rows("fct_listens") == len(merged)
    assert len(merged) < len(after.listens) / 2
    # rows of users whose history did not change are untouched, their run id included
    for key, row in after.listens.items():
        if key[0] not in changed:
            assert before.listens[key] == row
    # rows that disappeared: deleted users, deleted tracks (now orphans)
    served_tracks = {t["id"] for t in after.api["tracks"]}
    served_users = {u["id"] for u in after.api["users"]}
    for user_id, track_id in set(before.listens) - set(after.listens):
        assert user_id in changed or user_id not in served_users or track_id not in served_tracks


def test_incremental_result_equals_a_full_rebuild(scenario: Scenario) -> None:
    assert _without_run_id(scenario.listens_full_refresh) == _without_run_id(scenario.day2.listens)


def test_the_changed_share_counts_the_histories_an_incremental_build_rewrites(
    scenario: Scenario,
) -> None:
    """What the transform step weighs before choosing to rebuild fct_listens: the histories
    that changed, appeared or went since the table was built, over today's histories."""
    before, after = scenario.day1.histories, scenario.day2.histories
    changed = {u for u in before.keys() | after.keys() if before.get(u) != after.get(u)}
    assert changed and len(changed) < len(after)
    assert scenario.day2_changed_share == pytest.approx(len(changed) / len(after))


def test_the_rebuild_switch_rebuilds_fct_listens_in_full_with_the_same_rows(
    scenario: Scenario,
) -> None:
    """With nothing changed since the last build, an incremental build writes no row (see
    the second build above); the switch rewrites them all, and they are a full refresh's."""
    assert scenario.rebuilt.rows("fct_listens") == len(scenario.listens_rebuilt) > 0
    assert _without_run_id(scenario.listens_rebuilt) == _without_run_id(
        scenario.listens_full_refresh
    )
    assert {row[-1] for row in scenario.listens_rebuilt.values()} == {scenario.rebuilt.run_id}


def test_the_rebuild_share_is_the_projects_var(tmp_path: Path) -> None:
    project = tmp_path / "dbt_project.yml"
    project.write_text("name: x\nvars:\n  listens_rebuild_share: 0.25\n", encoding="utf-8")
    assert rebuild_share(project) == 0.25
    project.write_text("name: x\n", encoding="utf-8")
    assert rebuild_share(project) == 1.0  # no var: never rebuild
    assert 0 < rebuild_share() < 1  # the project's own


def _without_run_id(rows: dict) -> dict:
    return {key: row[:-1] for key, row in rows.items()}


def test_a_candidate_two_builds_old_catches_up_with_a_full_rebuild(scenario: Scenario) -> None:
    """The daily run swaps `marts` and `marts_candidate`: the candidate's fct_listens was built
    two runs ago. After a deleted track, a history that changed without growing and a deleted
    user, then after the track is served again, each incremental build equals a full one."""
    first, second = scenario.gap_days
    for day in scenario.gap_days:
        assert _without_run_id(day.listens) == _without_run_id(day.full_refresh)
    track, shrunk, deleted = (
        scenario.deleted_track_id,
        scenario.shrunk_user_id,
        scenario.deleted_user_id,
    )
    assert all(t != track for _, t in first.listens)
    assert all(u != deleted for u, _ in first.listens)
    assert any(u == shrunk for u, _ in first.listens)
    # the track is back: its listens are valid again, their histories unchanged
    assert second.rebuilt_users
    assert {u for u, t in second.listens if t == track} == second.rebuilt_users - {deleted}


def test_an_incremental_build_rewrites_only_the_users_that_changed(scenario: Scenario) -> None:
    """The track served again: only the rows of the users who hold it are written; every other
    row is untouched, its run id included."""
    first, second = scenario.gap_days
    rewritten = {key for key in second.listens if key[0] in second.rebuilt_users}
    assert second.build.rows("fct_listens") == len(rewritten) < len(second.listens) / 2
    for key, row in second.listens.items():
        if key not in rewritten:
            assert first.listens[key] == row


def test_the_incremental_predicates_are_indexed(scenario: Scenario) -> None:
    """raw's indexes (created by the ingestion after its load) and the watermark's."""
    indexes = {
        name
        for (name,) in scenario.query(
            "select indexname from pg_indexes where schemaname in ('raw', 'marts')"
            " and tablename in ('listen_history', 'listen_history__items', 'fct_listens')"
        )
    }
    assert set(RAW_INDEXES) <= indexes
    watermark = scenario.query(
        "select count(*) from pg_indexes where schemaname = 'marts'"
        " and tablename = 'fct_listens' and indexdef like '%(history_valid_from)'"
    )
    assert watermark == [(1,)]


def test_deletions_show_in_history_and_orphans(scenario: Scenario) -> None:
    events = scenario.day2.ingestion.tables if scenario.day2.ingestion else {}
    assert events["users"].retired >= 1
    deleted = "select count(*) from marts.dim_users_history where is_deleted"
    deleted_users = scenario.query(deleted)[0][0]
    day1_users = {u["id"] for u in scenario.day1.api["users"]}
    day2_users = {u["id"] for u in scenario.day2.api["users"]}
    assert deleted_users == len(day1_users - day2_users) >= 1
    current = scenario.query("select count(*) from marts.dim_users_history where is_current")
    assert current == [(len(day2_users),)]
    reasons = dict(
        scenario.query("select orphan_reason, count(*) from marts.fct_orphaned_listens group by 1")
    )
    assert set(reasons) <= {"deleted_track", "unknown_track", "unknown_user"}
    warned = {n.name: n.failures for n in scenario.day2.build.warned}
    assert warned.get("orphaned_listens") == sum(reasons.values())


def test_foreign_keys_exist_after_the_incremental_build(scenario: Scenario) -> None:
    """dbt's swap of the rebuilt dimensions drops the keys that point at them: they are back."""
    keys = {
        (table, name)
        for table, name in scenario.query(
            "select conrelid::regclass::text, conname from pg_constraint "
            "where connamespace = 'marts'::regnamespace and contype in ('f', 'p')"
        )
    }
    assert ("marts.fct_listens", "fk_fct_listens_user") in keys
    assert ("marts.fct_listens", "fk_fct_listens_track") in keys
    assert ("marts.fct_listens", "pk_fct_listens") in keys
    assert ("marts.bridge_track_genres", "fk_bridge_track_genres_genre") in keys
    assert ("marts.dim_users", "pk_dim_users") in keys


def test_every_contracted_primary_key_is_in_the_database(scenario: Scenario) -> None:
    """The keys are added once the rows are in (macros/table_constraints.sql): after full and
    incremental builds, each mart has its contract's primary key, on its columns, named
    `pk_<table>`, and no other."""
    contracts = yaml.safe_load((PROJECT_DIR / "models/marts/_marts__models.yml").read_text())
    wanted = {
        f"marts.{model['name']}": (f"pk_{model['name']}", constraint["columns"])
        for model in contracts["models"]
        for constraint in model.get("constraints", [])
        if constraint["type"] == "primary_key"
    }
    built = {
        table: (name, list(columns))
        for table, name, columns in scenario.query(
            "select c.conrelid::regclass::text, c.conname,"
            " array_agg(a.attname::text order by k.ord)"
            " from pg_constraint as c"
            " cross join unnest(c.conkey) with ordinality as k (attnum, ord)"
            " join pg_attribute as a on a.attrelid = c.conrelid and a.attnum = k.attnum"
            " where c.connamespace = 'marts'::regnamespace and c.contype = 'p'"
            " group by 1, 2"
        )
    }
    assert built == wanted


def test_what_the_left_out_tests_check_is_enforced_in_the_database(scenario: Scenario) -> None:
    """A Postgres build leaves out the tests that the marts' constraints prove
    (dbt_project.contracts.proven_tests): each constraint they rely on is in the database."""
    not_null = {
        (table, column)
        for table, column in scenario.query(
            "select c.relname::text, a.attname::text from pg_attribute as a"
            " join pg_class as c on c.oid = a.attrelid"
            " where c.relnamespace = 'marts'::regnamespace and c.relkind = 'r'"
            " and a.attnum > 0 and a.attnotnull"
        )
    }
    constraints = scenario.query(
        "select c.conrelid::regclass::text, c.contype::text, c.confrelid::regclass::text,"
        " array(select a.attname::text from unnest(c.conkey) as k (attnum)"
        "  join pg_attribute as a on a.attrelid = c.conrelid and a.attnum = k.attnum)"
        " from pg_constraint as c where c.connamespace = 'marts'::regnamespace"
    )
    keys = {(table.split(".")[1], frozenset(columns)) for table, kind, _, columns in constraints
            if kind in ("p", "u")}  # fmt: skip
    foreign = {
        (table.split(".")[1], columns[0], to.split(".")[1])
        for table, kind, to, columns in constraints
        if kind == "f" and len(columns) == 1
    }
    checked = {table.split(".")[1] for table, kind, _, _ in constraints if kind == "c"}
    proven = proven_tests()
    assert proven
    for test in proven:
        if test.name == "not_null":
            assert (test.model, test.column) in not_null, test.label
        elif test.name in ("unique", "unique_combination_of_columns"):
            columns = test.arguments.get("combination_of_columns") or [test.column]
            assert (test.model, frozenset(columns)) in keys, test.label
        elif test.name == "relationships":
            to = test.arguments["to"].removeprefix("ref('").removesuffix("')")
            assert (test.model, test.column, to) in foreign, test.label
        else:
            assert test.model in checked, test.label


def test_features_shares_add_up_and_windows_are_bounded(scenario: Scenario) -> None:
    bad = scenario.query(
        "select user_id from marts.user_genre_features group by user_id "
        "having abs(sum(listen_share) - 1) > 1e-9 and sum(listen_count) > 0"
    )
    assert bad == []
    as_of = scenario.query(
        "select max(as_of_at) = (select max(last_seen_at) from marts.fct_listens) "
        "from marts.user_genre_features"
    )
    assert as_of == [(True,)]


ANALYSES = sorted((PROJECT_DIR / "analyses").glob("*.sql"))


@pytest.mark.parametrize("path", ANALYSES, ids=[p.stem for p in ANALYSES])
def test_analyst_queries_run_and_are_in_the_docs(scenario: Scenario, path) -> None:
    sql = path.read_text().strip()
    rows = scenario.query(sql)
    assert rows, f"{path.stem} returned nothing"
    overview = (PROJECT_DIR / "models" / "overview.md").read_text()
    assert sql in overview, f"{path.name} differs from its copy in models/overview.md"


def test_top_genres_this_week_counts_distinct_listeners(scenario: Scenario) -> None:
    path = PROJECT_DIR / "analyses" / "top_genres_by_listeners_this_week.sql"
    rows = scenario.query(path.read_text())
    assert len(rows) <= 10
    counts = [listeners for _, listeners in rows]
    assert counts == sorted(counts, reverse=True)
    users = scenario.query("select count(*) from marts.dim_users")[0][0]
    assert all(0 < c <= users for c in counts)


def test_docs_generate_and_every_column_is_described(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["docs"]) == 0
    assert "docs site:" in capsys.readouterr().out
    target = scenario.target
    assert (target / "index.html").is_file()
    manifest = json.loads((target / "manifest.json").read_text())
    catalog = json.loads((target / "catalog.json").read_text())
    undocumented = []
    for unique_id, node in manifest["nodes"].items():
        if node["resource_type"] not in ("model", "seed") or node["package_name"] != "moovitamix":
            continue
        if not node["description"].strip():
            undocumented.append(unique_id)
        for column in catalog["nodes"].get(unique_id, {}).get("columns", {}):
            described = node["columns"].get(column, {}).get("description", "").strip()
            if not described:
                undocumented.append(f"{unique_id}.{column}")
    for unique_id, source in manifest["sources"].items():
        for column in catalog["sources"].get(unique_id, {}).get("columns", {}):
            if not source["columns"].get(column, {}).get("description", "").strip():
                undocumented.append(f"{unique_id}.{column}")
    assert undocumented == []
    assert "__overview__" in json.dumps(manifest["docs"])
    assert {e["name"] for e in manifest["exposures"].values()} == {
        "als_recommender",
        "analyst_queries",
    }


def test_docs_are_served_by_dbt_with_every_column_typed(scenario: Scenario, tmp_path) -> None:
    """`python -m dbt_project docs --serve` (what `make docs` runs): generate, then dbt's own
    server; the site's catalog gives every column of the marts and sources its type."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR.parent)}
    command = [sys.executable, "-m", "dbt_project", "docs", "--serve", "--port", str(port)]
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            assert server.poll() is None, "the docs server stopped"
            try:
                return httpx.get(f"{base}/catalog.json", timeout=5).is_success
            except httpx.TransportError:
                return False

        wait_until(serving, "the docs site", timeout_s=300, poll_s=1)
        catalog = httpx.get(f"{base}/catalog.json", timeout=5)
        manifest = httpx.get(f"{base}/manifest.json", timeout=5).json()
        assert "dbt" in httpx.get(f"{base}/", timeout=5).text
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=180)[0]  # a loaded machine is slow to stop it
    assert server.returncode == 0, output
    assert f"serving the dbt docs at {base}/" in output and "docs server stopped" in output
    nodes = {**catalog.json()["nodes"], **catalog.json()["sources"]}
    documented = {**manifest["nodes"], **manifest["sources"]}
    marts = {f"model.moovitamix.{name}" for name in MARTS}
    assert marts <= set(nodes)
    for unique_id, entry in nodes.items():
        types = {name: column["type"] for name, column in entry["columns"].items()}
        assert types and all(types.values()), unique_id
        if unique_id in marts:  # the contract's columns, each with its type
            contract = documented[unique_id]["columns"]
            assert set(types) == set(contract), unique_id
            for name, column in contract.items():
                assert types[name] == column["data_type"], (unique_id, name)


def test_cli_build_prints_a_table_of_models(
    scenario: Scenario, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["build", "--select", "genres", "dim_genres"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    genres = scenario.query("select count(*) from marts.dim_genres")[0][0]
    assert lines[0].split() == ["model", "materialized", "rows", "status", "seconds"]
    assert any(line.split()[:3] == ["dim_genres", "table", str(genres)] for line in lines)
    assert "dbt build OK" in lines[-1]


WRITTEN_ONCE = "stg_moovitamix__listen_history_item_versions_written_once"


def _written_once(scenario: Scenario, *, full_refresh: bool = False) -> tuple[NodeResult, str]:
    """The test that each listen history element is in raw once, alone; its result and the SQL
    it ran."""
    settings = load_settings()
    result = run_build(
        settings, new_run_id(), open_warehouse(settings), WRITTEN_ONCE, full_refresh=full_refresh
    )
    (node,) = [node for node in result.tests if node.name == WRITTEN_ONCE]
    (ran,) = scenario.target.glob(f"run/**/{WRITTEN_ONCE}.sql")
    return node, ran.read_text(encoding="utf-8")


def _record_checked_through(scenario: Scenario, load_id: str | None) -> str:
    """A successful transform in the run ledger that checked the loads through `load_id`."""
    ledger = RunLedger(scenario.url, new_run_id())
    ledger.ensure_tables()
    ledger.start_run(source="test", warehouse="test")
    ledger.start_step("transform")
    ledger.finish_step("transform", seconds=1.0, details={DETAIL: load_id})
    ledger.finish_run()
    return ledger.run_id


def test_elements_written_twice_fail_and_only_loads_after_a_passing_build_are_read(
    scenario: Scenario,
) -> None:
    runs: list[str] = []
    load_id = ""
    try:
        # no ledger: every element, grouped
        node, ran = _written_once(scenario)
        assert node.status == "pass" and "new_elements" not in ran
        with psycopg.connect(scenario.url.url()) as conn:
            checked = newest_load(conn)
        assert checked is not None
        runs.append(_record_checked_through(scenario, checked))
        node, ran = _written_once(scenario)
        assert node.status == "pass" and "new_elements" in ran  # only the loads after it

        load_id = add_elements_written_twice(scenario.url)
        node, ran = _written_once(scenario)
        # a copy of an element an earlier load wrote, and a position of a version twice
        assert (node.status, node.failures) == ("fail", 2) and "new_elements" in ran
        node, ran = _written_once(scenario, full_refresh=True)
        assert (node.status, node.failures) == ("fail", 2) and "new_elements" not in ran

        # a load a passing build recorded as checked is not read again; a record that is not a
        # load id counts as none: every element is read
        runs.append(_record_checked_through(scenario, load_id))
        assert _written_once(scenario)[0].status == "pass"
        runs.append(_record_checked_through(scenario, "not a load id"))
        node, ran = _written_once(scenario)
        assert (node.status, node.failures) == ("fail", 2) and "new_elements" not in ran
    finally:
        if load_id:
            remove_load(scenario.url, load_id)
        with psycopg.connect(scenario.url.url()) as conn:
            for table in ("pipeline_run_steps", "pipeline_runs"):
                conn.execute(f"delete from monitoring.{table} where run_id = any(%s)", (runs,))
