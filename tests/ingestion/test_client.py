"""The page client's retry rules and the concurrent pager, against small fake HTTP servers
(httpx.MockTransport): what it retries, how long it waits, when it gives up."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import orjson
import pytest

from ingestion.moovitamix_source.client import (
    ApiClient,
    FetchFailed,
    RequestCounters,
    RetryPolicy,
    parse_page,
    retry_after_s,
)

FAST = RetryPolicy(max_attempts=4, backoff_base_s=0.001, backoff_max_s=0.01)


def page_body(number: int, total: int, size: int = 100) -> bytes:
    start = (number - 1) * size
    items = [{"id": i} for i in range(start + 1, min(start + size, total) + 1)]
    pages = -(-total // size)
    return orjson.dumps(
        {"items": items, "total": total, "page": number, "size": size, "pages": pages}
    )


def api(total: int, size: int = 100, faults: Callable | None = None) -> httpx.MockTransport:
    """A fake endpoint with `total` records; `faults(request, attempt)` may answer instead."""
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        with lock:
            attempt = attempts[number] = attempts.get(number, 0) + 1
        if faults is not None:
            answer = faults(number, attempt)
            if answer is not None:
                return answer
        return httpx.Response(200, content=page_body(number, total, size))

    return httpx.MockTransport(handler)


def client(transport: httpx.BaseTransport, **kwargs: object) -> ApiClient:
    return ApiClient("http://api.test", transport=transport, retry=FAST, **kwargs)  # type: ignore[arg-type]


def first_attempt(answer: Callable[[httpx.Request | None], httpx.Response]) -> Callable:
    """A fault on the first attempt at each page, then normal answers."""

    def faults(number: int, attempt: int) -> httpx.Response | None:
        return answer(None) if attempt == 1 else None

    return faults


def raising(exc: Exception) -> Callable:
    def faults(number: int, attempt: int) -> httpx.Response | None:
        if attempt == 1:
            raise exc
        return None

    return faults


@pytest.mark.parametrize(
    ("faults", "cause"),
    [
        (first_attempt(lambda _: httpx.Response(500)), "http_5xx"),
        (first_attempt(lambda _: httpx.Response(503)), "http_5xx"),
        (first_attempt(lambda _: httpx.Response(429)), "http_429"),
        (first_attempt(lambda _: httpx.Response(429, headers={"Retry-After": "0"})), "http_429"),
        (first_attempt(lambda _: httpx.Response(200, content=b'{"items": [')), "malformed_json"),
        (first_attempt(lambda _: httpx.Response(200, content=b"<html></html>")), "malformed_json"),
        (
            first_attempt(lambda _: httpx.Response(200, content=b'{"items": null}')),
            "malformed_json",
        ),
        (raising(httpx.ConnectError("refused")), "connection"),
        (raising(httpx.RemoteProtocolError("peer closed connection")), "connection"),
        (raising(httpx.ReadTimeout("timed out")), "timeout"),
        (raising(httpx.ConnectTimeout("timed out")), "timeout"),
    ],
)
def test_transient_failures_are_retried(faults: Callable, cause: str) -> None:
    counters = RequestCounters()
    with client(api(250, faults=faults)) as c:
        page = c.get_page("tracks", 2, counters)
    assert [r["id"] for r in page.items][:2] == [101, 102]
    assert counters.retries == {cause: 1}
    assert counters.requests == 2
    assert counters.pages == 1


def test_http_errors_are_counted_by_status() -> None:
    statuses = iter([502, 429, 504])

    def faults(number: int, attempt: int) -> httpx.Response | None:
        return httpx.Response(next(statuses)) if attempt <= 3 else None

    counters = RequestCounters()
    with client(api(10, faults=faults)) as c:
        c.get_page("users", 1, counters)
    assert counters.http_errors == {"502": 1, "429": 1, "504": 1}
    assert counters.retries == {"http_5xx": 2, "http_429": 1}


def test_retry_after_is_honoured() -> None:
    faults = first_attempt(lambda _: httpx.Response(429, headers={"Retry-After": "0.4"}))
    started = time.monotonic()
    with client(api(10, faults=faults)) as c:
        c.get_page("users", 1, RequestCounters())
    assert time.monotonic() - started >= 0.4


def test_retry_after_is_capped() -> None:
    faults = first_attempt(lambda _: httpx.Response(503, headers={"Retry-After": "3600"}))
    policy = RetryPolicy(max_attempts=2, backoff_base_s=0.001, retry_after_max_s=0.05)
    started = time.monotonic()
    with ApiClient("http://api.test", transport=api(10, faults=faults), retry=policy) as c:
        c.get_page("users", 1, RequestCounters())
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    faults = first_attempt(lambda _: httpx.Response(status, text="no such thing"))
    counters = RequestCounters()
    with client(api(10, faults=faults)) as c, pytest.raises(FetchFailed) as failed:
        c.get_page("tracks", 3, counters)
    assert counters.requests == 1
    assert str(failed.value).startswith(f"tracks page 3: HTTP {status}")
    assert "not retried" in str(failed.value)


def test_giving_up_names_endpoint_page_and_last_error() -> None:
    def faults(number: int, attempt: int) -> httpx.Response:
        return httpx.Response(503)

    counters = RequestCounters()
    with client(api(10, faults=faults)) as c, pytest.raises(FetchFailed) as failed:
        c.get_page("listen_history", 7, counters)
    message = str(failed.value)
    assert message == (
        "listen_history page 7: HTTP 503 Service Unavailable (gave up after 4 attempts)"
    )
    assert "\n" not in message
    assert counters.requests == 4
    assert counters.retries == {"http_5xx": 3}


def test_backoff_grows_exponentially_with_jitter() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=10.0)
    rng = random.Random(1)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)]:
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not constant


def test_retry_after_values() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s("0.5") == 0.5
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (retry_after_s(later) or 0) <= 31


def test_parse_page_rejects_what_is_not_a_page() -> None:
    assert parse_page(1, b'{"items": [], "total": null, "pages": null}').total is None
    for body in (b"[]", b'{"total": 3}', b'{"items": [], "total": "3"}', b"{"):
        with pytest.raises(ValueError):
            parse_page(1, body)


# ---- reading every page ----------------------------------------------------------------------


def test_read_pages_reads_every_page_once_concurrently() -> None:
    in_flight, peak = 0, 0
    lock = threading.Lock()
    seen: list[int] = []

    def slow(number: int, attempt: int) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            seen.append(number)
        time.sleep(0.02)
        with lock:
            in_flight -= 1
        return None

    with client(api(1234, faults=slow), concurrency=4) as c:
        pages = list(c.read_pages("users", RequestCounters()))
    assert sorted(p.number for p in pages) == list(range(1, 14))
    assert sorted(r["id"] for p in pages for r in p.items) == list(range(1, 1235))
    assert sorted(seen) == list(range(1, 14))
    assert 2 <= peak <= 4


@pytest.mark.parametrize("total", [0, 1, 100, 101, 250])
def test_read_pages_without_pages_and_total_reads_until_a_short_page(total: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        body = orjson.loads(page_body(number, total))
        body["total"] = body["pages"] = None
        return httpx.Response(200, content=orjson.dumps(body))

    plans: list[int | None] = []
    with client(httpx.MockTransport(handler), concurrency=3) as c:
        pages = list(c.read_pages("tracks", RequestCounters(), on_plan=plans.append))
    assert plans == [None]
    assert sorted(r["id"] for p in pages for r in p.items) == list(range(1, total + 1))


def test_read_pages_stops_at_the_first_failure() -> None:
    def faults(number: int, attempt: int) -> httpx.Response | None:
        return httpx.Response(500) if number == 5 else None

    counters = RequestCounters()
    with (
        client(api(5000, faults=faults), concurrency=4) as c,
        pytest.raises(FetchFailed, match="tracks page 5: HTTP 500"),
    ):
        list(c.read_pages("tracks", counters))
    assert counters.pages < 50  # the other workers stopped
