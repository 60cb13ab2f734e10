"""The health report's plots, drawn with matplotlib (Agg, no pyplot state) and returned as PNG
bytes to embed in the page. A plot with nothing to show yet says so instead."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from expectations.report.data import ReportData

WIDTH, HEIGHT, DPI = 9.5, 3.4, 100
FAILED_COLOR = "#c0392b"
MAX_TICKS = 12


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # No metadata: the PNG carries no version strings or URLs.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _empty(title: str, message: str = "no data yet") -> bytes:
    figure, axes = _figure()
    axes.set_title(title, loc="left")
    axes.text(0.5, 0.5, message, ha="center", va="center", color="grey", fontsize=13)
    axes.set_axis_off()
    return _png(figure)


def _run_labels(started: Sequence[pd.Timestamp]) -> list[str]:
    return [ts.strftime("%m-%d %H:%M") for ts in started]


def _set_run_ticks(axes: Axes, labels: list[str]) -> None:
    step = max(1, -(-len(labels) // MAX_TICKS))
    positions = list(range(0, len(labels), step))
    axes.set_xticks(positions, [labels[i] for i in positions], rotation=30, ha="right")
    axes.set_xlabel("run (UTC start)")


def _legend_outside(axes: Axes) -> None:
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def run_durations(data: ReportData) -> bytes:
    title = "Run duration by step (seconds)"
    if data.steps.empty:
        return _empty(title)
    runs = data.runs.set_index("run_id")
    seconds = data.steps.pivot_table(
        index="run_id", columns="step", values="seconds", aggfunc="sum"
    ).reindex(runs.index)
    order = data.steps.groupby("step")["step_order"].min().sort_values().index
    seconds = seconds[order].fillna(0.0)
    figure, axes = _figure()
    positions = list(range(len(seconds)))
    bottom = [0.0] * len(seconds)
    for step in seconds.columns:
        values = seconds[step].tolist()
        axes.bar(positions, values, bottom=bottom, label=step, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    failed = [i for i, status in enumerate(runs["status"]) if status == "failed"]
    if failed:
        axes.scatter(
            failed,
            [bottom[i] for i in failed],
            marker="v",
            color=FAILED_COLOR,
            zorder=3,
            label="failed run",
        )
    _set_run_ticks(axes, _run_labels(runs["started_at"]))
    axes.set_title(title, loc="left")
    axes.set_ylabel("seconds")
    _legend_outside(axes)
    return _png(figure)


def records_per_endpoint(data: ReportData) -> bytes:
    title = "Records per endpoint per day"
    loaded = (
        data.ingestion[data.ingestion["status"] == "loaded"] if not data.ingestion.empty else None
    )
    if loaded is None or loaded.empty:
        return _empty(title)
    loaded = loaded.assign(day=loaded["started_at"].dt.floor("D"))
    last = loaded.sort_values("started_at").groupby(["day", "endpoint"]).last().reset_index()
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    served, changed = figure.subplots(1, 2)
    for endpoint, rows in last.groupby("endpoint"):
        served.plot(rows["day"], rows["records"], marker="o", label=str(endpoint))
        versions = pd.to_numeric(rows["versions_added"], errors="coerce").fillna(0)
        changed.plot(rows["day"], versions, marker="o", label=str(endpoint))
    served.set_title("records received (the API's total)", loc="left", fontsize=10)
    changed.set_title("new or changed versions loaded", loc="left", fontsize=10)
    for axes in (served, changed):
        axes.xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=8))
        axes.xaxis.set_major_formatter(DateFormatter("%m-%d"))
        axes.tick_params(axis="x", labelrotation=30)
        axes.set_ylim(bottom=0)
        axes.legend(fontsize=8)
    figure.suptitle(title, x=0.01, ha="left")
    return _png(figure)


def _failed_requests(row: pd.Series) -> int:
    """HTTP error answers plus transport failures (timeouts, resets): the retries of causes
    that are not an HTTP status; every failed request was retried or ended the read."""
    http = sum(int(v) for v in (row["http_errors"] or {}).values())
    transport = sum(
        int(v) for cause, v in (row["retries"] or {}).items() if not str(cause).startswith("http")
    )
    return http + transport


def request_health(data: ReportData) -> bytes:
    title = "API request success rate and retries per ingestion run"
    if data.ingestion.empty:
        return _empty(title)
    frame = data.ingestion.assign(
        failed=data.ingestion.apply(_failed_requests, axis=1),
        retried=data.ingestion["retries"].apply(lambda r: sum(int(v) for v in (r or {}).values())),
    )
    per_run = (
        frame.groupby("run_id")
        .agg(
            started_at=("started_at", "min"),
            requests=("requests", "sum"),
            failed=("failed", "sum"),
            retried=("retried", "sum"),
        )
        .sort_values("started_at")
    )
    success = 1 - per_run["failed"] / per_run["requests"].where(per_run["requests"] > 0)
    figure, axes = _figure()
    positions = list(range(len(per_run)))
    retries_axes = axes.twinx()
    retries_axes.bar(positions, per_run["retried"], color="#f0b27a", alpha=0.7, label="retries")
    retries_axes.set_ylabel("retried requests")
    axes.plot(positions, success.fillna(1.0), color="#1f618d", marker="o", label="success rate")
    axes.set_zorder(retries_axes.get_zorder() + 1)
    axes.patch.set_visible(False)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(min(0.9, float(success.min()) - 0.02) if success.notna().any() else 0.9, 1.005)
    axes.set_ylabel("requests answered 2xx")
    _set_run_ticks(axes, _run_labels(per_run["started_at"]))
    axes.set_title(title, loc="left")
    lines = axes.get_legend_handles_labels()
    bars = retries_axes.get_legend_handles_labels()
    axes.legend(lines[0] + bars[0], lines[1] + bars[1], fontsize=8, loc="lower left")
    return _png(figure)


def validation_pass_rate(data: ReportData) -> bytes:
    title = "Validation pass rate per run"
    if data.validation.empty:
        return _empty(title)
    frame = data.validation.assign(passed=data.validation["success"].astype(float))
    per_run = (
        frame.pivot_table(index="run_id", columns="severity", values="passed", aggfunc="mean")
        .join(frame.groupby("run_id")["validated_at"].min())
        .sort_values("validated_at")
    )
    figure, axes = _figure()
    positions = list(range(len(per_run)))
    styles = {"error": ("#c0392b", "error expectations"), "warning": ("#d68910", "warnings")}
    for severity, (color, label) in styles.items():
        if severity in per_run:
            axes.plot(positions, per_run[severity], marker="o", color=color, label=label)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(-0.02, 1.05)
    _set_run_ticks(axes, _run_labels(per_run["validated_at"]))
    axes.set_title(title, loc="left")
    axes.legend(fontsize=8, loc="lower left")
    return _png(figure)


def rejected_rows(data: ReportData) -> bytes:
    title = "Rows rejected by the source contract (raw._rejected), per ingestion run"
    if data.ingestion.empty:
        return _empty(title)
    per_run = data.ingestion.pivot_table(
        index="run_id", columns="endpoint", values="rejected", aggfunc="sum"
    ).fillna(0)
    started = data.ingestion.groupby("run_id")["started_at"].min()
    per_run = per_run.join(started).sort_values("started_at")
    figure, axes = _figure()
    positions = list(range(len(per_run)))
    bottom = [0.0] * len(per_run)
    for endpoint in [c for c in per_run.columns if c != "started_at"]:
        values = per_run[endpoint].astype(float).tolist()
        axes.bar(positions, values, bottom=bottom, label=endpoint, width=0.8)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    _set_run_ticks(axes, _run_labels(per_run["started_at"]))
    axes.set_title(title, loc="left")
    axes.set_ylabel("rows")
    _legend_outside(axes)
    return _png(figure)


PLOTS = (
    ("Run durations", run_durations),
    ("Records per endpoint", records_per_endpoint),
    ("Requests", request_health),
    ("Validation", validation_pass_rate),
    ("Rejected rows", rejected_rows),
)
