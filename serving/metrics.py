"""Prometheus metrics (prometheus-client): requests and latency per route template, impressions
written or lost, model swaps and artifacts that failed to load.

Each app has its own registry. Under several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode) so that /metrics adds up every worker."""

from __future__ import annotations

import os
import time

from fastapi import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "serving_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_request_seconds",
            "Request latency by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.impressions = Counter(
            "serving_impressions",
            "Impressions by outcome: flushed (written), failed (a write failed), dropped "
            "(the queue was full)",
            ["outcome"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "serving_model_swaps",
            "Models put in service (the first load included)",
            registry=self.registry,
        )
        self.model_load_failures = Counter(
            "serving_model_load_failures",
            "Published models whose artifact could not be loaded (the previous one kept)",
            registry=self.registry,
        )

    def exposition(self) -> Response:
        registry = self.registry
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """`app`, each HTTP request counted and timed under its route template
        (`/users/{user_id}/recommendations`). Plain ASGI: Starlette's BaseHTTPMiddleware costs
        more per request than the whole route."""

        async def timed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                return await app(scope, receive, send)
            started = time.perf_counter()
            status = [500]

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                template = getattr(scope.get("route"), "path", "unmatched")
                method = scope["method"]
                self.latency.labels(template, method).observe(time.perf_counter() - started)
                self.requests.labels(template, method, str(status[0])).inc()

        return timed
