"""Alerts over a real HTTP webhook on a loopback port."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moovitamix.alerts import WEBHOOK_ATTEMPTS, Alert, send_alert


class _Hook:
    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[dict[str, object]] = []


@pytest.fixture
def webhook() -> Iterator[tuple[str, _Hook]]:
    hook = _Hook(200)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            hook.bodies.append(json.loads(self.rfile.read(length)))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", hook
    server.shutdown()


def test_alert_is_posted_slack_compatible_with_fields(webhook: tuple[str, _Hook]) -> None:
    url, hook = webhook
    alert = Alert("error", "daily run failed in step ingest", "run-1", "ingest", {"pages": 3})
    assert send_alert(alert, url) is True
    (body,) = hook.bodies
    assert isinstance(body["text"], str) and "ingest" in body["text"]
    assert body["severity"] == "error" and body["run_id"] == "run-1"
    assert body["step"] == "ingest" and body["details"] == {"pages": 3}


def test_failing_webhook_is_retried_and_never_raises(
    webhook: tuple[str, _Hook], caplog: pytest.LogCaptureFixture
) -> None:
    url, hook = webhook
    hook.status = 503
    assert send_alert(Alert("warning", "t", "run-2"), url, backoff_s=0.01) is False
    assert len(hook.bodies) == WEBHOOK_ATTEMPTS
    assert "alert webhook failed" in caplog.text


def test_webhook_that_is_down_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    assert (
        send_alert(Alert("warning", "t", "run-3"), "http://127.0.0.1:1/", backoff_s=0.01) is False
    )
    assert "ALERT" in caplog.text
