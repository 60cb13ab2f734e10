"""Prometheus metrics (prometheus-client): requests and latency per route template, impressions
written or lost, model swaps and artifacts that failed to load.

Each app has its own registry. Under several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode) so that /metrics adds up every worker."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

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
            "serving_model_swaps", "Models put in service (the first load included)",
            registry=self.registry,
        )  # fmt: skip
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

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Count and time every request under its route template (`/users/{user_id}/...`)."""
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.latency.labels(template, request.method).observe(time.perf_counter() - started)
            self.requests.labels(template, request.method, str(status)).inc()
