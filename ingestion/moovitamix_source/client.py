"""HTTP for the MooVitamix API: one page with retries, and every page of an endpoint read
concurrently with bounded concurrency.

Retried (exponential backoff with jitter, `Retry-After` honoured): timeouts, connection errors
(refused, reset, closed mid-body), 429, 5xx, and a 200 whose body is not a page (malformed
JSON). Not retried: any other status (a 4xx other than 429 will not heal). When the attempts
run out, `FetchFailed` names the endpoint, the page and the last error.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from ingestion.moovitamix_source.contract import PAGE_SIZE

log = logging.getLogger(__name__)


class FetchFailed(RuntimeError):
    """A page could not be read; the message is one line: endpoint, page, last error."""

    def __init__(self, endpoint: str, page: int, error: str) -> None:
        self.endpoint = endpoint
        self.page = page
        self.error = error
        super().__init__(f"{endpoint} page {page}: {error}")


class _Cancelled(Exception):
    """The read was abandoned (another page failed, or the reader stopped)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_base_s: float = 0.5  # first retry after ~0.25-0.5 s, then doubling
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 120.0  # a longer Retry-After is capped (and logged)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number `retry` (1-based): exponential, with "equal jitter"."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = 5.0
    read_s: float = 30.0

    def httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect_s, read=self.read_s, write=self.read_s, pool=None)


@dataclass
class RequestCounters:
    """What one endpoint's reads cost; updated from the fetching threads."""

    requests: int = 0
    pages: int = 0
    bytes: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # by cause
    http_errors: Counter[str] = field(default_factory=Counter)  # by status
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def response(self, status: int, size: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += size
            if status >= 400:
                self.http_errors[str(status)] += 1

    def failure(self) -> None:
        with self._lock:
            self.requests += 1

    def retry(self, cause: str) -> None:
        with self._lock:
            self.retries[cause] += 1

    def page(self) -> None:
        with self._lock:
            self.pages += 1


@dataclass(frozen=True)
class Page:
    number: int
    items: list[Any]
    total: int | None
    pages: int | None
    size: int  # bytes of the body


class _BadPage(ValueError):
    pass


def parse_page(number: int, body: bytes) -> Page:
    """A page envelope {"items": [...], "total", "page", "size", "pages"}; _BadPage if not."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _BadPage(f"malformed JSON ({exc})") from None
    if type(data) is not dict or type(data.get("items")) is not list:
        raise _BadPage("not a page: no items list")
    total, pages = data.get("total"), data.get("pages")
    for name, value in (("total", total), ("pages", pages)):
        if value is not None and (type(value) is not int or value < 0):
            raise _BadPage(f"not a page: {name} is {value!r}")
    return Page(number, data["items"], total, pages, len(body))


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text and text[0] else type(exc).__name__


class ApiClient:
    """The API at `base_url`; thread-safe (one connection pool of `concurrency` connections)."""

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 16,
        page_size: int = PAGE_SIZE,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        transport: httpx.BaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page size must be within 1..{PAGE_SIZE}")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.page_size = page_size
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self._rng_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=self.timeouts.httpx(),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers={"Accept": "application/json", "User-Agent": "moovitamix-ingestion"},
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one page ----------------------------------------------------------------------------

    def get_page(
        self,
        endpoint: str,
        number: int,
        counters: RequestCounters,
        cancel: threading.Event | None = None,
    ) -> Page:
        """One page, retried as the module says; FetchFailed when it cannot be had."""
        cancel = cancel or threading.Event()
        params = {"page": number, "size": self.page_size}
        for attempt in range(1, self.retry.max_attempts + 1):
            if cancel.is_set():
                raise _Cancelled
            wait: float | None = None
            try:
                response = self._http.get(f"/{endpoint}", params=params)
            except httpx.TimeoutException as exc:
                counters.failure()
                cause, error = "timeout", _error_text(exc)
            except httpx.TransportError as exc:
                counters.failure()
                cause, error = "connection", _error_text(exc)
            else:
                status = response.status_code
                counters.response(status, len(response.content))
                if status == 200:
                    try:
                        page = parse_page(number, response.content)
                    except _BadPage as exc:
                        cause, error = "malformed_json", str(exc)
                    else:
                        counters.page()
                        return page
                elif status == 429 or 500 <= status <= 599:
                    cause = "http_429" if status == 429 else "http_5xx"
                    error = f"HTTP {status} {response.reason_phrase}".strip()
                    wait = retry_after_s(response.headers.get("Retry-After"))
                else:
                    body = response.text.strip().replace("\n", " ")[:200]
                    raise FetchFailed(
                        endpoint,
                        number,
                        f"HTTP {status} {response.reason_phrase} (not retried): {body}".strip(),
                    )
            if attempt == self.retry.max_attempts:
                raise FetchFailed(endpoint, number, f"{error} (gave up after {attempt} attempts)")
            if wait is None:
                with self._rng_lock:
                    wait = self.retry.backoff(attempt, self._rng)
            elif wait > self.retry.retry_after_max_s:
                log.warning(
                    "%s page %s: Retry-After %.0fs capped at %.0fs",
                    endpoint,
                    number,
                    wait,
                    self.retry.retry_after_max_s,
                )
                wait = self.retry.retry_after_max_s
            counters.retry(cause)
            log.debug("%s page %s: %s; retry %d in %.2fs", endpoint, number, error, attempt, wait)
            if cancel.wait(wait):
                raise _Cancelled
        raise AssertionError("unreachable")

    # ---- every page --------------------------------------------------------------------------

    def read_pages(
        self,
        endpoint: str,
        counters: RequestCounters,
        on_plan: Callable[[int | None], None] | None = None,
    ) -> Iterator[Page]:
        """Every page of `endpoint`: page 1, then the rest concurrently (in arrival order).

        The last page comes from page 1's `pages` (or its `total`); when both are null, pages
        are read until one comes back short. `on_plan(pages)` reports the plan (None: unknown).
        At most 2 x concurrency pages wait for the consumer: memory stays flat.
        """
        first = self.get_page(endpoint, 1, counters)
        last = planned_pages(first, self.page_size)
        if on_plan:
            on_plan(last)
        yield first
        if last is None:
            if len(first.items) < self.page_size:
                return
        elif last <= 1:
            return
        yield from self._read_concurrently(endpoint, counters, last)

    def _read_concurrently(
        self, endpoint: str, counters: RequestCounters, last: int | None
    ) -> Iterator[Page]:
        plan = _PagePlan(next_page=2, last=last)
        stop = threading.Event()
        out: queue.Queue[Page | BaseException | None] = queue.Queue(maxsize=2 * self.concurrency)

        def work() -> None:
            try:
                while (number := plan.take(stop)) is not None:
                    page = self.get_page(endpoint, number, counters, stop)
                    if len(page.items) < self.page_size:
                        plan.saw_short(number)
                    out.put(page)
            except _Cancelled:
                pass
            except BaseException as exc:  # handed to the consumer, which raises it
                stop.set()
                out.put(exc)
            finally:
                out.put(None)

        workers = min(self.concurrency, last - 1) if last is not None else self.concurrency
        threads = [
            threading.Thread(target=work, name=f"fetch-{endpoint}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in threads:
            thread.start()
        try:
            finished = 0
            while finished < len(threads):
                item = out.get()
                if item is None:
                    finished += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()
            while any(t.is_alive() for t in threads):  # unblock workers waiting to put
                with contextlib.suppress(queue.Empty):
                    out.get(timeout=0.05)
            for thread in threads:
                thread.join()


def planned_pages(first: Page, page_size: int) -> int | None:
    """How many pages to read, from page 1's envelope (None: unknown, read until short)."""
    by_total = math.ceil(first.total / page_size) if first.total is not None else None
    if first.pages is None:
        return by_total
    return max(first.pages, by_total or 0)


class _PagePlan:
    """Hands out page numbers to the workers, up to the last page (known, or found)."""

    def __init__(self, next_page: int, last: int | None) -> None:
        self._next = next_page
        self._last = last
        self._end: int | None = None  # first short page seen, when the last is unknown
        self._lock = threading.Lock()

    def take(self, stop: threading.Event) -> int | None:
        with self._lock:
            limit = self._last if self._last is not None else self._end
            if stop.is_set() or (limit is not None and self._next > limit):
                return None
            number = self._next
            self._next += 1
            return number

    def saw_short(self, number: int) -> None:
        with self._lock:
            if self._last is None and (self._end is None or number < self._end):
                self._end = number
