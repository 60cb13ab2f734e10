"""Alerts: to stderr and the run log, and POSTed to ALERT_WEBHOOK_URL when set (Slack's `{"text"}`
plus structured fields), retried a few times but never failing the pipeline by themselves. They
carry counts and names, never record contents (which may hold PII)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from moovitamix.errors import one_line

log = logging.getLogger("moovitamix.alerts")

Severity = Literal["error", "warning"]
WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Alert:
    severity: Severity
    title: str  # one line: what happened
    run_id: str
    step: str | None = None
    details: Mapping[str, object] = field(default_factory=dict)
    raised_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def text(self) -> str:
        where = f" [{self.step}]" if self.step else ""
        facts = ", ".join(f"{k}={v}" for k, v in self.details.items())
        icon = ":red_circle:" if self.severity == "error" else ":warning:"
        return f"{icon} MooVitamix {self.severity}{where}: {self.title}" + (
            f" ({facts})" if facts else ""
        )

    def payload(self) -> dict[str, object]:
        return {"text": self.text, **asdict(self), "details": dict(self.details)}


def send_alert(alert: Alert, webhook_url: str | None, *, backoff_s: float = 0.5) -> bool:
    """Report the alert; returns whether the webhook took it (True when there is none)."""
    # The console handler writes to stderr, the run log's to the file: both see it.
    level = logging.ERROR if alert.severity == "error" else logging.WARNING
    log.log(level, "ALERT %s", alert.text)
    if not webhook_url:
        return True
    retrying = Retrying(
        stop=stop_after_attempt(WEBHOOK_ATTEMPTS),
        wait=wait_exponential(multiplier=backoff_s),
        retry=retry_if_exception_type(httpx.HTTPError),
        reraise=True,
    )
    try:
        retrying(_post, webhook_url, alert.payload())
    except httpx.HTTPError as exc:
        log.warning(
            "alert webhook failed after %d attempts (%s); alert kept in the run log",
            WEBHOOK_ATTEMPTS,
            one_line(exc),
        )
        return False
    return True


def _post(url: str, payload: dict[str, object]) -> None:
    httpx.post(url, json=payload, timeout=WEBHOOK_TIMEOUT_S).raise_for_status()
