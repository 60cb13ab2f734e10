"""The health report's HTML: one self-contained page (inline CSS, plots as data: URIs), which
loads nothing from anywhere, so it opens offline and can be mailed or archived as one file."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import pandas as pd

from expectations.report.data import ReportData

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1000px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
.status-success { color: #1e8449; font-weight: bold; }
.status-failed { color: #c0392b; font-weight: bold; }
.status-running { color: #d68910; font-weight: bold; }
table { border-collapse: collapse; width: 100%; font-size: 0.88em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f6f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.empty { color: #888; font-style: italic; }
"""

Mask = Callable[[pd.DataFrame], pd.Series]


class Html(str):
    """Markup made here, put in a table cell as is."""


def _e(value: object) -> str:
    if isinstance(value, Html):
        return value
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp | datetime):
        return html.escape(value.strftime("%Y-%m-%d %H:%M:%S UTC"))
    if isinstance(value, dict):
        return html.escape(", ".join(f"{k}: {v}" for k, v in value.items()))
    if isinstance(value, float):
        return html.escape(f"{value:,.1f}")
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> str:
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_e(v)}</td>' if isinstance(v, int | float) else f"<td>{_e(v)}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    if not body:
        return f'<p class="empty">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _status(status: object) -> Html:
    text = _e(status)
    return Html(f'<span class="status-{text}">{text}</span>')


def _image(title: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'


def _jsonish(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _rows(frame: pd.DataFrame, columns: list[str], mask: Mask | None = None) -> Iterable[tuple]:
    """The `columns` of the rows of `frame` where `mask(frame)` holds (all without a mask)."""
    if frame.empty:
        return []
    return (frame if mask is None else frame[mask(frame)])[columns].itertuples(index=False)


def _last_run_section(data: ReportData) -> str:
    last = data.last_run
    if last is None:
        return '<p class="empty">No run recorded yet (monitoring.pipeline_runs is empty).</p>'
    run_id = last["run_id"]
    run = [run_id, _status(last["status"]), *last[["started_at", "seconds", "failed_step"]]]
    # Only failed steps: the report's own step is still running while the page is written.
    steps = _rows(
        data.steps,
        ["step", "status", "seconds", "error_message"],
        lambda f: (f["run_id"] == run_id) & (f["status"] == "failed"),
    )
    checks = _rows(
        data.validation,
        ["suite", "expectation", "severity", "observed_value", "threshold"],
        lambda f: (f["run_id"] == run_id) & ~f["success"].astype(bool),
    )
    requests = [
        [r.endpoint, r.status, r.requests, _jsonish(r.http_errors), _jsonish(r.retries), r.error]
        for r in _rows(data.ingestion, list(data.ingestion), lambda f: f["run_id"] == run_id)
        if r.status != "loaded" or _jsonish(r.http_errors) or _jsonish(r.retries)
    ]
    return "\n".join(
        [
            _table(["run", "status", "started", "seconds", "failed step", "error"],
                   [[*run, last["error_message"]]], ""),
            "<h3>Failed steps</h3>",
            _table(["step", "status", "seconds", "error"], steps, "No step failed."),
            "<h3>Failed expectations</h3>",
            _table(["suite", "expectation", "severity", "observed", "threshold"], checks,
                   "No expectation failed in this run (or it did not reach validation)."),
            "<h3>Failed and retried requests</h3>",
            _table(["endpoint", "status", "requests", "HTTP errors by status", "retries by cause",
                    "error"], requests, "No request failed or was retried."),
        ]
    )  # fmt: skip


def _recent_runs(data: ReportData, count: int = 15) -> str:
    columns = ["run_id", "started_at", "status", "seconds", "failed_step"]
    headers = ["run", "started", "status", "seconds", "failed step"]
    return _table(headers, _rows(data.runs.tail(count).iloc[::-1], columns), "No run recorded yet.")


def render_page(data: ReportData, plots: Sequence[tuple[str, bytes]]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    runs = len(data.runs)
    failed = int((data.runs["status"] == "failed").sum()) if runs else 0
    sections = "\n".join(f"<h2>{html.escape(t)}</h2>\n{_image(t, png)}" for t, png in plots)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MooVitamix pipeline health</title>
<style>{CSS}</style>
</head>
<body>
<h1>MooVitamix pipeline health</h1>
<p class="meta">Generated {generated} from the warehouse's monitoring schema: the last {runs}
run(s) of the run ledger, {failed} of them failed.</p>
<h2>Last run</h2>
{_last_run_section(data)}
{sections}
<h2>Recent runs</h2>
{_recent_runs(data)}
</body>
</html>
"""
