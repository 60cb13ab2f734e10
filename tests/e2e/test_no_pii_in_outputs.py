"""SECURITY.md: logs, alerts and validation results report counts and ids, never record contents.
The clean cron run of day 0 (tests/e2e/conftest.py) is scanned for every user's e-mail and full
name as the warehouse holds them: its console output, its JSON run log, dbt's logs, the GX
validation results and data docs, and the health report. (dlt's working data, under the data
dir, holds the records by design and is not scanned.)"""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.conftest import CleanRun

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pii(clean: CleanRun) -> set[str]:
    """Every e-mail and `first last` name the API served, as raw keeps them (lowercased too)."""
    with psycopg.connect(clean.warehouse.url()) as conn:
        rows = conn.execute("select email, first_name, last_name from raw.users").fetchall()
    values: set[str] = set()
    for email, first, last in rows:
        values |= {email.strip(), email.strip().lower(), f"{first} {last}"}
    return {value for value in values if len(value) >= 6}


def test_no_e_mail_or_name_in_logs_results_or_reports(clean_day0: CleanRun) -> None:
    pii = _pii(clean_day0)
    assert len(pii) > 300 and sum("@" in value for value in pii) > 100, "e-mails and names"
    root = clean_day0.root
    files = [
        path
        for folder in (
            clean_day0.logs_dir,
            root / "dbt_project" / "logs",
            root / "expectations" / "gx" / "uncommitted",
            root / "reports",
        )
        for path in (folder.rglob("*") if folder.exists() else ())
        if path.is_file()
    ]
    assert any(p.suffix == ".jsonl" for p in files), "the run log is scanned"
    assert any("validations" in p.parts for p in files), "the GX validation results are scanned"
    assert any(p.name == "health.html" for p in files), "the health report is scanned"
    texts = {"console": clean_day0.result.stdout + clean_day0.result.stderr}
    texts |= {str(p): p.read_bytes().decode(errors="replace") for p in files}
    leaks = sorted(
        (where, value) for where, text in texts.items() for value in pii if value in text
    )
    assert leaks == [], leaks[:10]
