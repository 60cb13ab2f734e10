"""Alerts over a real HTTP webhook on a loopback port."""

from __future__ import annotations

import pytest

from moovitamix.alerts import WEBHOOK_ATTEMPTS, Alert, send_alert
from tests.conftest import Webhook


def test_alert_is_posted_slack_compatible_with_fields(webhook: Webhook) -> None:
    url, hook = webhook.url, webhook
    alert = Alert("error", "daily run failed in step ingest", "run-1", "ingest", {"pages": 3})
    assert send_alert(alert, url) is True
    (body,) = hook.bodies
    assert isinstance(body["text"], str) and "ingest" in body["text"]
    assert body["severity"] == "error" and body["run_id"] == "run-1"
    assert body["step"] == "ingest" and body["details"] == {"pages": 3}


def test_failing_webhook_is_retried_and_never_raises(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    url, hook = webhook.url, webhook
    hook.status = 503
    assert send_alert(Alert("warning", "t", "run-2"), url, backoff_s=0.01) is False
    assert len(hook.bodies) == WEBHOOK_ATTEMPTS
    assert "alert webhook failed" in caplog.text


def test_webhook_that_is_down_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    assert (
        send_alert(Alert("warning", "t", "run-3"), "http://127.0.0.1:1/", backoff_s=0.01) is False
    )
    assert "ALERT" in caplog.text
