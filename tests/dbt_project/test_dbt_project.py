"""The dbt project's files and the runner's reporting, without a database."""

from __future__ import annotations

import re

import pytest
import yaml

import dbt_project.__main__ as cli
from dbt_project import step
from dbt_project.results import BuildResult, NodeResult
from dbt_project.runner import PROJECT_DIR, build_args
from moovitamix import exit_codes
from moovitamix.build_progress import BuildProgress
from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import load_settings
from moovitamix.step import RunContext, StepFailed


def _node(name: str, kind: str, status: str, **kw) -> NodeResult:
    materialization = {"model": "table", "test": "test", "seed": "seed"}[kind]
    return NodeResult(f"{kind}.x.{name}", name, kind, materialization, status, 1.5, **kw)


def test_profile_reads_everything_from_the_environment() -> None:
    profile = yaml.safe_load((PROJECT_DIR / "profiles.yml").read_text())
    output = profile["moovitamix"]["outputs"]["warehouse"]
    for key in ("host", "port", "user", "password", "dbname"):
        assert "env_var('MVX_DBT_" in str(output[key]), key
    assert "env_var('MVX_DBT_PASSWORD', '')" in output["password"]


def test_project_sends_no_telemetry_and_keeps_schema_names() -> None:
    project = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())
    assert project["flags"]["send_anonymous_usage_stats"] is False
    macro = (PROJECT_DIR / "macros" / "generate_schema_name.sql").read_text()
    assert "custom_schema_name | trim" in macro
    marts = project["models"]["moovitamix"]["marts"]
    assert "var('marts_schema'" in marts["+schema"]
    assert marts["+contract"] == {"enforced": True}


def test_build_args() -> None:
    assert build_args() == ["--exclude-resource-type", "unit_test"]
    assert build_args("fct_listens+", exclude_unit_tests=False, full_refresh=True) == [
        "--select",
        "fct_listens+",
        "--full-refresh",
    ]
    assert build_args(["a", "b"], "c")[:5] == ["--select", "a", "b", "--exclude", "c"]


def test_table_lists_models_with_rows_and_tests_that_did_not_pass() -> None:
    result = BuildResult(
        "build",
        "run-1",
        success=False,
        seconds=12.3,
        nodes=[
            _node("dim_users", "model", "success", rows_affected=1200),
            _node("genres", "seed", "success", rows_affected=17),
            _node("unique_x", "test", "pass", failures=0),
            _node("orphaned_listens", "test", "warn", failures=3, message="Got 3 results"),
            _node("not_null_y", "test", "fail", failures=2, message="Got 2 results\nmore"),
        ],
    )
    lines = result.table().splitlines()
    assert lines[0].split() == ["model", "materialized", "rows", "status", "seconds"]
    assert lines[1].split() == ["dim_users", "table", "1,200", "success", "1.50"]
    assert "WARN orphaned_listens (3 rows): Got 3 results" in lines
    assert "FAIL not_null_y (2 rows): Got 2 results" in lines
    summary = result.summary()
    assert summary.startswith("dbt build FAILED in 12.3s: 2 models/seeds, 3 tests")
    assert "1 failed, first: not_null_y: Got 2 results" in summary
    assert "\n" not in summary
    assert result.rows("dim_users") == 1200
    assert result.rows("missing") is None


def test_summary_of_a_dbt_error_is_one_line() -> None:
    result = BuildResult("build", "r", False, 1.0, error="Could not find profile named 'x'")
    assert result.summary() == "dbt build failed: Could not find profile named 'x'"


def test_unreachable_warehouse_is_one_line_and_exit_3(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://nobody@127.0.0.1:1/nowhere")
    monkeypatch.setenv("MOOVITAMIX_RUN_ID", "test-run")
    assert cli.main(["build"]) == exit_codes.WAREHOUSE_UNREACHABLE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the warehouse")
    assert len(err.splitlines()) == 1


def test_every_model_sql_has_a_yaml_entry() -> None:
    described = set()
    for path in (PROJECT_DIR / "models").rglob("_*__models.yml"):
        described |= {m["name"] for m in yaml.safe_load(path.read_text())["models"]}
    models = {p.stem for p in (PROJECT_DIR / "models").rglob("*.sql")}
    assert models == described


def test_staging_models_are_the_only_ones_reading_sources() -> None:
    for path in (PROJECT_DIR / "models").rglob("*.sql"):
        if re.search(r"\bsource\(", path.read_text()):
            assert path.name.startswith("stg_"), path


def _test_names(tests: list) -> list[str]:
    return [t if isinstance(t, str) else next(iter(t)) for t in tests or []]


def _test_arguments(tests: list, name: str) -> list[dict]:
    return [
        (t[name] or {}).get("arguments", t[name]) or {}
        for t in tests or []
        if isinstance(t, dict) and name in t
    ]


def test_every_key_constraint_has_a_data_test() -> None:
    """Spark enforces no primary or foreign key: a dbt test must check each of them."""
    marts = yaml.safe_load((PROJECT_DIR / "models/marts/_marts__models.yml").read_text())
    for model in marts["models"]:
        columns = {c["name"]: c for c in model["columns"]}
        combinations = [
            a["combination_of_columns"]
            for a in _test_arguments(model.get("data_tests"), "unique_combination_of_columns")
        ]
        for constraint in model.get("constraints", []):
            keys = constraint.get("columns", [])
            if constraint["type"] == "primary_key":
                for key in keys:
                    assert "not_null" in _test_names(columns[key].get("data_tests")), (
                        model["name"],
                        key,
                    )
                unique = len(keys) == 1 and "unique" in _test_names(
                    columns[keys[0]].get("data_tests")
                )
                assert unique or keys in combinations, (model["name"], keys)
            elif constraint["type"] == "foreign_key":
                (key,) = keys
                relationships = _test_arguments(columns[key].get("data_tests"), "relationships")
                assert {
                    "to": constraint["to"],
                    "field": constraint["to_columns"][0],
                } in relationships, (
                    model["name"],
                    constraint["name"],
                )


def _context() -> RunContext:
    settings = load_settings({"WAREHOUSE_URL": "postgresql://u@127.0.0.1:1/db"})
    url = ConnectionURL.parse("postgresql://u@127.0.0.1:1/db")
    return RunContext(settings, "run-1", url, "http://127.0.0.1:1", api_is_simulator=True)


def test_transform_step_reports_rows_and_warnings(monkeypatch) -> None:
    result = BuildResult(
        "build",
        "run-1",
        success=True,
        seconds=3.0,
        nodes=[
            _node("fct_listens", "model", "success", rows_affected=40),
            _node("orphaned_listens", "test", "warn", failures=3, message="Got 3 results"),
        ],
    )
    calls = []
    monkeypatch.setattr(
        step, "run_build", lambda *a, **kw: calls.append((a, kw)) or result, raising=True
    )
    ctx = _context()
    report = step.transform(ctx)
    assert calls[0][0][1:] == ("run-1", ctx.warehouse) and calls[0][1] == {
        "exclude_unit_tests": True,
        "full_refresh": False,
        "marts_schema": None,  # a step on its own (no publication) builds the marts in place
        "callbacks": [],  # no step waits for its models (RunContext.build_progress)
    }
    assert report.rows_out == 40
    assert report.details["warnings"] == {"orphaned_listens": 3}
    assert "warnings: orphaned_listens 3" in report.summary
    assert ctx.facts["marts"] == {"fct_listens": 40}


def test_transform_step_reports_its_models_to_a_step_waiting_for_them(monkeypatch) -> None:
    """The daily run's progress gets dbt's events while the build runs, and is ended after it
    (passed or not): a step waiting for models dbt did not build stops waiting."""
    result = BuildResult("build", "run-1", success=False, seconds=1.0, error="a model failed")
    callbacks: list = []
    monkeypatch.setattr(
        step, "run_build", lambda *a, **kw: callbacks.extend(kw["callbacks"]) or result
    )
    ctx = _context()
    ctx.build_progress = progress = BuildProgress()
    with pytest.raises(StepFailed):
        step.transform(ctx)
    assert callbacks == [progress.dbt_callback]
    assert progress.wait_for(["fct_listens"]) is False  # ended: nobody waits forever


def test_transform_step_fails_with_one_line(monkeypatch) -> None:
    failed = BuildResult(
        "build",
        "run-1",
        success=False,
        seconds=3.0,
        nodes=[_node("not_null_x", "test", "fail", failures=2, message="Got 2 results")],
    )
    monkeypatch.setattr(step, "run_build", lambda *a, **kw: failed)
    with pytest.raises(StepFailed) as raised:
        step.transform(_context())
    assert "not_null_x: Got 2 results" in str(raised.value)
    assert "\n" not in str(raised.value)
