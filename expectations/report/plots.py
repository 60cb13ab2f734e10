"""The health report's plots: matplotlib figures (Agg, no pyplot state), one run or one day per
tick, rendered to PNG by `png`. A plot with nothing to show yet says so instead."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

if TYPE_CHECKING:
    from expectations.report.data import ReportData

WIDTH, HEIGHT, DPI = 9.5, 3.4, 100
FAILED_COLOR = "#c0392b"
MAX_TICKS = 12


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no version strings
    return buffer.getvalue()


def figure_with_axes(title: str, columns: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    if columns == 1:
        axes[0].set_title(title, loc="left")
    else:
        figure.suptitle(title, x=0.01, ha="left")
    return figure, list(axes)


def _empty(title: str) -> Figure:
    figure, (axes,) = figure_with_axes(title)
    axes.text(0.5, 0.5, "no data yet", ha="center", va="center", color="grey", fontsize=13)
    axes.set_axis_off()
    return figure


def time_ticks(axes: Axes, times: Sequence[pd.Timestamp], fmt: str = "%m-%d %H:%M") -> None:
    """One position per run (or day), labelled with its UTC time; at most MAX_TICKS labels."""
    labels = [ts.strftime(fmt) for ts in times]
    positions = range(0, len(labels), max(1, -(-len(labels) // MAX_TICKS)))
    axes.set_xticks(positions, [labels[i] for i in positions], rotation=30, ha="right")
    axes.set_xlim(-0.6, len(labels) - 0.4)
    axes.set_xlabel("run (UTC start)" if "%H" in fmt else "day (UTC)")


def _counts_axis(axes: Axes, values: pd.Series, label: str) -> None:
    """A count axis from 0 with whole-number ticks, also when every value is 0."""
    axes.set_ylim(0, max(1.0, float(values.max() if len(values) else 0)) * 1.08)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(label)


def _stacked_bars(
    title: str, frame: pd.DataFrame, times: pd.Series, label: str, failed: Sequence[int] = ()
) -> Figure:
    """One bar per row of `frame` (a run), one stacked segment per column, the `failed` rows
    marked; legend outside."""
    figure, (axes,) = figure_with_axes(title)
    bottom = pd.Series(0.0, index=frame.index)
    for column in frame.columns:
        axes.bar(range(len(frame)), frame[column], bottom=bottom, label=str(column), width=0.8)
        bottom = bottom + frame[column]
    if failed:
        marks = bottom.iloc[list(failed)]
        axes.scatter(failed, marks, marker="v", color=FAILED_COLOR, zorder=3, label="failed run")
    time_ticks(axes, times)
    _counts_axis(axes, bottom, label)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return figure


def run_durations(data: ReportData) -> Figure:
    title = "Run duration by step (seconds)"
    if data.steps.empty:
        return _empty(title)
    runs = data.runs.set_index("run_id")
    order = data.steps.groupby("step")["step_order"].min().sort_values().index
    steps = data.steps.pivot_table(index="run_id", columns="step", values="seconds", aggfunc="sum")
    seconds = steps.reindex(index=runs.index, columns=order).astype(float).fillna(0.0)
    failed = [i for i, status in enumerate(runs["status"]) if status == "failed"]
    return _stacked_bars(title, seconds, runs["started_at"], "seconds", failed)


def records_per_endpoint(data: ReportData) -> Figure:
    """The last loaded read of each endpoint per UTC day: one tick per day that has one."""
    title = "Records per endpoint per day"
    loaded = data.ingestion[data.ingestion["status"] == "loaded"] if len(data.ingestion) else None
    if loaded is None or loaded.empty:
        return _empty(title)
    loaded = loaded.assign(
        day=loaded["started_at"].dt.floor("D"),
        versions=pd.to_numeric(loaded["versions_added"], errors="coerce").fillna(0),
    )
    last = loaded.sort_values("started_at").groupby(["day", "endpoint"]).last()
    figure, (served, changed) = figure_with_axes(title, columns=2)
    for axes, column, subtitle in (
        (served, "records", "records received (the API's total)"),
        (changed, "versions", "new or changed versions loaded"),
    ):
        per_day = last[column].unstack("endpoint").astype(float)
        for endpoint in per_day.columns:
            axes.plot(range(len(per_day)), per_day[endpoint], marker="o", label=str(endpoint))
        axes.set_title(subtitle, loc="left", fontsize=10)
        time_ticks(axes, per_day.index, "%Y-%m-%d")
        _counts_axis(axes, per_day.max(axis=1), "")
        axes.legend(fontsize=8)
    return figure


def _failed_requests(row: pd.Series) -> int:
    """HTTP error answers plus transport failures (retried causes that are not an HTTP status)."""
    transport = [v for cause, v in (row["retries"] or {}).items() if not cause.startswith("http")]
    return sum(map(int, (row["http_errors"] or {}).values())) + sum(map(int, transport))


def request_health(data: ReportData) -> Figure:
    title = "API request success rate and retries per ingestion run"
    if data.ingestion.empty:
        return _empty(title)
    frame = data.ingestion.assign(
        failed=data.ingestion.apply(_failed_requests, axis=1),
        retried=data.ingestion["retries"].apply(lambda r: sum(int(v) for v in (r or {}).values())),
    )
    sums = dict.fromkeys(("requests", "failed", "retried"), "sum")
    per_run = frame.groupby("run_id").agg({"started_at": "min", **sums}).sort_values("started_at")
    success = 1 - per_run["failed"] / per_run["requests"].where(per_run["requests"] > 0)
    figure, (axes,) = figure_with_axes(title)
    positions = range(len(per_run))
    retries_axes = axes.twinx()
    retries_axes.bar(positions, per_run["retried"], color="#f0b27a", alpha=0.7, label="retries")
    _counts_axis(retries_axes, per_run["retried"], "retried requests")
    axes.plot(positions, success.fillna(1.0), color="#1f618d", marker="o", label="success rate")
    axes.set_zorder(retries_axes.get_zorder() + 1)
    axes.patch.set_visible(False)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(min(0.9, float(success.min()) - 0.02) if success.notna().any() else 0.9, 1.005)
    axes.set_ylabel("requests answered 2xx")
    time_ticks(axes, per_run["started_at"])
    lines, bars = axes.get_legend_handles_labels(), retries_axes.get_legend_handles_labels()
    axes.legend(lines[0] + bars[0], lines[1] + bars[1], fontsize=8, loc="lower left")
    return figure


def validation_pass_rate(data: ReportData) -> Figure:
    title = "Validation pass rate per run"
    if data.validation.empty:
        return _empty(title)
    frame = data.validation.assign(passed=data.validation["success"].astype(float))
    per_run = (
        frame.pivot_table(index="run_id", columns="severity", values="passed", aggfunc="mean")
        .join(frame.groupby("run_id")["validated_at"].min())
        .sort_values("validated_at")
    )
    figure, (axes,) = figure_with_axes(title)
    styles = {"error": ("#c0392b", "error expectations"), "warning": ("#d68910", "warnings")}
    for severity, (color, label) in styles.items():
        if severity in per_run:
            axes.plot(range(len(per_run)), per_run[severity], marker="o", color=color, label=label)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylim(-0.02, 1.05)
    time_ticks(axes, per_run["validated_at"])
    axes.legend(fontsize=8, loc="lower left")
    return figure


def rejected_rows(data: ReportData) -> Figure:
    title = "Rows rejected by the source contract (raw._rejected), per ingestion run"
    if data.ingestion.empty:
        return _empty(title)
    per_run = data.ingestion.pivot_table(
        index="run_id", columns="endpoint", values="rejected", aggfunc="sum"
    )
    started = data.ingestion.groupby("run_id")["started_at"].min().sort_values()
    per_run = per_run.reindex(started.index).astype(float).fillna(0.0)
    return _stacked_bars(title, per_run, started, "rows")


PLOTS = (
    ("Run durations", run_durations),
    ("Records per endpoint", records_per_endpoint),
    ("Requests", request_health),
    ("Validation", validation_pass_rate),
    ("Rejected rows", rejected_rows),
)
