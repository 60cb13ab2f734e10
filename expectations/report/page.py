"""The health report's HTML: one self-contained page (inline CSS, plots as data: URIs), which
loads nothing from anywhere, so it opens offline and can be mailed or archived as one file."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
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


def _last_run_section(data: ReportData) -> str:
    last = data.last_run
    if last is None:
        return '<p class="empty">No run recorded yet (monitoring.pipeline_runs is empty).</p>'
    run_id = last["run_id"]
    parts = [
        _table(
            ["run", "status", "started", "seconds", "failed step", "error"],
            [
                [
                    run_id,
                    _status(last["status"]),
                    last["started_at"],
                    last["seconds"],
                    last["failed_step"],
                    last["error_message"],
                ]
            ],
            "",
        )
    ]
    steps = data.steps[data.steps["run_id"] == run_id] if not data.steps.empty else data.steps
    failed_steps = steps[steps["status"] != "success"] if not steps.empty else steps
    parts.append("<h3>Failed steps</h3>")
    parts.append(
        _table(
            ["step", "status", "seconds", "error"],
            failed_steps[["step", "status", "seconds", "error_message"]].itertuples(index=False)
            if not failed_steps.empty
            else [],
            "No step failed.",
        )
    )
    checks = (
        data.validation[(data.validation["run_id"] == run_id) & ~data.validation["success"]]
        if not data.validation.empty
        else data.validation
    )
    parts.append("<h3>Failed expectations</h3>")
    parts.append(
        _table(
            ["suite", "expectation", "severity", "observed", "threshold"],
            checks[["suite", "expectation", "severity", "observed_value", "threshold"]].itertuples(
                index=False
            )
            if not checks.empty
            else [],
            "No expectation failed in this run (or it did not reach validation).",
        )
    )
    requests = (
        data.ingestion[data.ingestion["run_id"] == run_id] if not data.ingestion.empty else []
    )
    failing = [
        row
        for row in (requests.itertuples(index=False) if len(requests) else [])
        if row.status != "loaded" or _jsonish(row.http_errors) or _jsonish(row.retries)
    ]
    parts.append("<h3>Failed and retried requests</h3>")
    parts.append(
        _table(
            [
                "endpoint",
                "status",
                "requests",
                "HTTP errors by status",
                "retries by cause",
                "error",
            ],
            [
                [
                    r.endpoint,
                    r.status,
                    r.requests,
                    _jsonish(r.http_errors),
                    _jsonish(r.retries),
                    r.error,
                ]
                for r in failing
            ],
            "No request failed or was retried.",
        )
    )
    return "\n".join(parts)


def _recent_runs(data: ReportData, count: int = 15) -> str:
    rows = data.runs.tail(count).iloc[::-1] if not data.runs.empty else data.runs
    return _table(
        ["run", "started", "status", "seconds", "failed step"],
        rows[["run_id", "started_at", "status", "seconds", "failed_step"]].itertuples(index=False)
        if not rows.empty
        else [],
        "No run recorded yet.",
    )


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
