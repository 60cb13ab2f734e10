"""The suites as code, without a warehouse: thresholds.toml, the committed GX context, and what
every expectation carries (severity in `meta` and in GX's own field, a limit, a description)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expectations.checks import GX_SEVERITY, Check, expectations
from expectations.dialect import sql_text
from expectations.suites import BuildContext, Stage, all_suites
from expectations.thresholds import (
    DEFAULT_PATH,
    ThresholdsError,
    load_thresholds,
    parse_thresholds,
)
from tests.expectations.conftest import COMMITTED_GX_YML

RUN = "20261126T000000Z-abcdef"


def _checks() -> dict[str, list[Check]]:
    context = BuildContext(RUN, load_thresholds())
    return {spec.name: spec.build(context) for spec in all_suites()}


def _build_all() -> dict[str, list[object]]:
    return {
        suite: [e for check in checks for e in expectations(check, suite, RUN)]
        for suite, checks in _checks().items()
    }


def test_every_expectation_has_a_severity_a_limit_and_a_description() -> None:
    suites = _build_all()
    expectations = [e for built in suites.values() for e in built]
    assert len(expectations) == 16
    for expectation in expectations:
        meta = expectation.meta  # type: ignore[attr-defined]
        assert meta["severity"] in ("error", "warning")
        assert expectation.severity == GX_SEVERITY[meta["severity"]]  # type: ignore[attr-defined]
        assert isinstance(meta["limit"], float) and meta["check"]
        assert " at most " in expectation.description  # type: ignore[attr-defined]


def test_every_batch_of_a_metric_query_has_an_alias() -> None:
    """`{batch}` may be a subquery (a raw table's current rows), which Postgres 14 and 15 refuse
    in FROM without an alias."""
    queries = [check.query for checks in _checks().values() for check in checks]
    assert len(queries) == 15  # the 16 expectations: orphaned_listens has two levels
    for query in queries:
        batches = re.findall(r"\{batch\}(\s+as\s+\w+)?", query)
        assert batches and all(batches), query


def test_every_threshold_is_used_by_a_suite() -> None:
    suites = _build_all()
    used = {
        (e.meta["check"], e.meta["severity"])  # type: ignore[attr-defined]
        for built in suites.values()
        for e in built
    }
    configured = {
        (limits.check, severity)
        for limits in load_thresholds().checks.values()
        for severity in limits.levels
    }
    assert used == configured


def test_suites_are_staged_around_the_ml_step() -> None:
    stages = {spec.name: spec.stage for spec in all_suites()}
    assert stages.pop("recommendations") is Stage.RECOMMENDATIONS
    assert stages.pop("play_next") is Stage.RECOMMENDATIONS
    assert set(stages.values()) == {Stage.DATA}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ({"raw": {"email_format": {"tolerance": 1}}}, "neither `error` nor `warning`"),
        ({"raw": {"email_format": {"error": "high"}}}, "must be a number"),
        ({"raw": {"email_format": {"error": 0.1}}}, r"\[raw\.email_format\] has no `description`"),
        ({"metrics": {"volume_tables": ["dim_users"]}}, "schema.table"),
    ],
)
def test_bad_thresholds_are_refused(toml: dict[str, object], message: str) -> None:
    with pytest.raises(ThresholdsError, match=message):
        parse_thresholds(toml)


def test_a_missing_check_names_the_file() -> None:
    thresholds = parse_thresholds({})
    with pytest.raises(ThresholdsError, match=r"no \[raw\.email_format\] table"):
        thresholds["raw.email_format"]


def test_committed_thresholds_load() -> None:
    thresholds = load_thresholds(DEFAULT_PATH)
    assert thresholds["marts.orphaned_listens"].levels == {"warning": 0.01, "error": 0.05}
    assert "marts.dim_users" in thresholds.volume_tables


def test_the_wording_comes_from_thresholds_toml() -> None:
    """A result's description and alert title are thresholds.toml's, `{table}` filled in; without
    an `alert`, the description titles the alert."""
    from great_expectations.core import ExpectationValidationResult

    from expectations.checks import Measured
    from expectations.results import check_result

    checks = {check.name: check for checks in _checks().values() for check in checks}
    wording = {}
    for name in ("retry_storm", "rejected_share"):
        (expectation,) = expectations(checks[name], "raw.ingestion", RUN)
        gx = ExpectationValidationResult(success=True, expectation_config=expectation.configuration)
        result = check_result(RUN, "raw.ingestion", gx, Measured(checks[name]))
        wording[name] = (result.description, result.alert_title)
    assert wording == {
        "retry_storm": (
            "Share of API requests retried in the latest ingestion, per endpoint",
            "retry storm: too many API requests retried",
        ),
        "rejected_share": ("Share of records rejected by the contract, per endpoint",) * 2,
    }
    future = [c for c in _checks()["raw.tracks"] if c.name == "timestamps_not_in_future"]
    assert [c.description for c in future] == [
        "Current raw.tracks rows with created_at or updated_at in the future"
    ]


def test_sql_text_escapes_quotes_and_format_braces() -> None:
    assert sql_text("it's {batch}") == "'it''s {{batch}}'"


def test_committed_context_connects_through_a_substitution_only() -> None:
    text = COMMITTED_GX_YML.read_text()
    assert "connection_string: ${MVX_GX_CONNECTION_STRING}" in text
    assert "postgresql" not in text.replace("type: postgres", "")
    assert "base_directory: uncommitted/" in text


def test_committed_context_is_in_line_with_the_code(gx_dir: Path) -> None:
    """The asset the code validates is in the committed YAML: a run rewrites nothing."""
    from expectations.context import metrics_batch, open_context

    before = (gx_dir / "great_expectations.yml").read_text()
    batch = metrics_batch(open_context(gx_dir))
    assert (batch.data_asset.schema_name, batch.data_asset.table_name) == (
        "monitoring",
        "check_metrics",
    )
    assert (gx_dir / "great_expectations.yml").read_text() == before


def test_an_expectation_gx_could_not_evaluate_could_not_run() -> None:
    """GX's own failure (its query on check_metrics raised) is reported as such, never as
    the measured values."""
    from great_expectations.core import ExpectationValidationResult

    from expectations.checks import Measured
    from expectations.results import check_result

    check = _checks()["raw.ingestion"][0]
    (expectation,) = expectations(check, "raw.ingestion", RUN)
    gx_result = ExpectationValidationResult(
        success=False,
        expectation_config=expectation.configuration,
        exception_info={"raised_exception": True, "exception_message": "no such table\nLINE 1"},
    )
    measured = Measured(check, ({"subject": "users", "observed": 0.0},))
    result = check_result(RUN, "raw.ingestion", gx_result, measured)
    assert (result.success, result.could_not_run) == (False, "no such table LINE 1")
    assert result.observed_value == "could not run: no such table LINE 1"
    passed = ExpectationValidationResult(success=True, expectation_config=expectation.configuration)
    assert check_result(RUN, "raw.ingestion", passed, measured).observed_value == "0 (users)"
