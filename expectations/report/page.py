"""The health report's HTML: health.html.j2 (beside this file) filled with the last run's
failures, the plots as PNGs and the recent runs; Jinja escapes every value."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader

from expectations.report import uptake
from expectations.report.data import ReportData

Mask = Callable[[pd.DataFrame], pd.Series]
RECENT_RUNS, RECENT_COLUMNS = 15, ["run_id", "started_at", "status", "seconds", "failed_step"]


def _text(value: object) -> str:
    """A cell's text: times in UTC, counts by key ('503: 2'), floats to one decimal."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp | datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return f"{value:,.1f}" if isinstance(value, float) else str(value)


def _rows(frame: pd.DataFrame, columns: list[str], mask: Mask | None = None) -> Iterable[tuple]:
    """The `columns` of the rows of `frame` where `mask(frame)` holds (all without a mask)."""
    if frame.empty:
        return []
    return (frame if mask is None else frame[mask(frame)])[columns].itertuples(index=False)


def _last_run(data: ReportData, run_id: str) -> dict[str, object]:
    """The last run's failed steps (the report's own step is still running: not a failure),
    failed expectations, and failed or retried requests."""
    return {
        "steps": _rows(
            data.steps,
            ["step", "status", "seconds", "error_message"],
            lambda f: (f["run_id"] == run_id) & (f["status"] == "failed"),
        ),
        "checks": _rows(
            data.validation,
            ["suite", "expectation", "severity", "observed_value", "threshold"],
            lambda f: (f["run_id"] == run_id) & ~f["success"].astype(bool),
        ),
        "requests": _rows(
            data.ingestion,
            ["endpoint", "status", "requests", "http_errors", "retries", "error"],
            lambda f: (
                (f["run_id"] == run_id)
                & (f["status"].ne("loaded") | f[["http_errors", "retries"]].map(bool).any(axis=1))
            ),
        ),
    }


def render_page(
    data: ReportData, plots: Sequence[tuple[str, bytes]], uptake_plot: bytes | None = None
) -> str:
    """The page; `uptake_plot` (the uptake per day) is shown with a table per model run."""
    templates = Environment(
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    templates.filters["text"] = _text
    last = None if data.runs.empty else data.runs.iloc[-1]
    uptake_columns = ["model_run_id", "first_day", "last_day", "new_tracks", *uptake.LISTS]
    return templates.get_template("health.html.j2").render(
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        runs=len(data.runs),
        failed=int((data.runs["status"] == "failed").sum()) if len(data.runs) else 0,
        last=last,
        **(_last_run(data, last["run_id"]) if last is not None else {}),
        plots=[(title, base64.b64encode(png).decode("ascii")) for title, png in plots],
        uptake_plot=base64.b64encode(uptake_plot).decode("ascii") if uptake_plot else None,
        uptake_runs=_rows(uptake.per_model_run(data.uptake), uptake_columns) if uptake_plot else [],
        uptake_note=uptake.NOTE,
        recent=_rows(data.runs.tail(RECENT_RUNS).iloc[::-1], RECENT_COLUMNS),
    )
