"""The suites as code, without a warehouse: thresholds.toml, the committed GX context, and what
every expectation carries (severity in `meta` and in GX's own field, a limit, a description)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from expectations.checks import GX_SEVERITY, ExpectMetricWithinLimit, sql_text
from expectations.suites import BuildContext, Stage, all_suites
from expectations.thresholds import (
    DEFAULT_PATH,
    ThresholdsError,
    load_thresholds,
    parse_thresholds,
)
from tests.expectations.conftest import COMMITTED_GX_YML


def _build_all() -> dict[str, list[object]]:
    context = BuildContext("20261126T000000Z-abcdef", load_thresholds())
    return {spec.name: spec.build(context) for spec in all_suites()}


def test_every_expectation_has_a_severity_a_limit_and_a_description() -> None:
    suites = _build_all()
    expectations = [e for built in suites.values() for e in built]
    assert len(expectations) == 14
    for expectation in expectations:
        meta = expectation.meta  # type: ignore[attr-defined]
        assert meta["severity"] in ("error", "warning")
        assert expectation.severity == GX_SEVERITY[meta["severity"]]  # type: ignore[attr-defined]
        assert meta["threshold"].startswith("<= ") and meta["check"]
        assert expectation.description  # type: ignore[attr-defined]


def test_every_batch_of_a_metric_query_has_an_alias_and_the_query_joins() -> None:
    """GX substitutes `{batch}` without an alias into a query with a JOIN (and appends
    `AS subselect` otherwise): the queries join their limit in, and alias every batch, which
    Postgres 14 and 15 require of a subquery in FROM."""
    queries = [
        e.unexpected_rows_query  # type: ignore[attr-defined]
        for built in _build_all().values()
        for e in built
        if isinstance(e, ExpectMetricWithinLimit)
    ]
    assert queries
    for query in queries:
        assert re.search(r"\bjoin\b", query, re.IGNORECASE), query
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
    assert set(stages.values()) == {Stage.DATA}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ({"raw": {"email_format": {"tolerance": 1}}}, "neither `error` nor `warning`"),
        ({"raw": {"email_format": {"error": "high"}}}, "must be a number"),
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


def test_sql_text_escapes_quotes_and_format_braces() -> None:
    assert sql_text("it's {batch}") == "'it''s {{batch}}'"


def test_committed_context_connects_through_a_substitution_only() -> None:
    text = COMMITTED_GX_YML.read_text()
    assert "connection_string: ${MVX_GX_CONNECTION_STRING}" in text
    assert "postgresql" not in text.replace("type: postgres", "")
    assert "base_directory: uncommitted/" in text


def test_committed_context_is_in_line_with_the_suites(gx_dir: Path) -> None:
    """The assets the code declares are all in the committed YAML: a run rewrites nothing."""
    from expectations.context import ensure_assets, open_context

    before = (gx_dir / "great_expectations.yml").read_text()
    context = open_context(gx_dir)
    definitions = ensure_assets(context, [spec.asset for spec in all_suites()])
    assert set(definitions) == {spec.asset.name for spec in all_suites()}
    assert (gx_dir / "great_expectations.yml").read_text() == before
