"""The health report: one self-contained HTML page (reports/health.html), plots of the run
ledger, the monitoring tables and recommendation uptake, and the last run's failures.
`python -m expectations report`."""

from __future__ import annotations

import logging
from pathlib import Path

from moovitamix.connection_url import ConnectionURL
from moovitamix.settings import Settings

log = logging.getLogger(__name__)


def default_report_path(settings: Settings) -> Path:
    return settings.project_root / "reports" / "health.html"


def write_atomically(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def write_health_report(url: ConnectionURL, path: Path, *, max_runs: int = 60) -> Path:
    """Render the report of the latest `max_runs` runs to `path` (written atomically)."""
    from expectations.report.data import load_report_data
    from expectations.report.page import render_page
    from expectations.report.plots import PLOTS, png
    from expectations.report.uptake import per_day

    data = load_report_data(url, max_runs)
    plots = [(title, png(draw(data))) for title, draw in PLOTS]
    page = render_page(data, plots, None if data.uptake.empty else png(per_day(data.uptake)))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, page)
    log.info("health report: %s (%d runs)", path, len(data.runs))
    return path
