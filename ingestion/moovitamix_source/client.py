"""HTTP for the MooVitamix API: one page with retries, and every page of an endpoint read
concurrently with bounded concurrency.

Retried (exponential backoff with jitter, `Retry-After` honoured): timeouts, connection errors
(refused, reset, closed mid-body), 429, 5xx, and a 200 whose body is not a page (malformed
JSON). Not retried: any other status (a 4xx other than 429 will not heal), and a response
larger than `max_response_bytes` (the API is untrusted: the body is read with that limit, a
Content-Length above it is refused before reading, a gzip body is inflated up to it). When the
attempts run out, `FetchFailed` names the endpoint, the page and the last error.

A body orjson refuses only because a string holds a lone UTF-16 surrogate is decoded by the
stdlib instead (`Page.lenient`): the records with such strings are rejected, not the page.

The requests go through one keep-alive `http.client` connection per fetching thread: ~0.3 ms
of CPU per request where httpx takes ~1.8 ms, and the GIL is shared with the record checks.
httpx is used instead when a transport is injected (the tests' fake servers) or a proxy is
configured in the environment (httpx honours it, http.client would not).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import queue
import random
import select
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson

from ingestion.moovitamix_source.contract import PAGE_SIZE

DEFAULT_MAX_RESPONSE_BYTES = 50 * 2**20
_CHUNK = 2**20

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
    lenient: bool = False  # decoded by the stdlib: strings may hold lone surrogates


class _BadPage(ValueError):
    pass


def parse_page(number: int, body: bytes) -> Page:
    """A page envelope {"items": [...], "total", "page", "size", "pages"}; _BadPage if not."""
    lenient = False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        data, lenient = _stdlib_loads(body, str(exc)), True
        if data is None:
            raise _BadPage(f"malformed JSON ({exc})") from None
    if type(data) is not dict or type(data.get("items")) is not list:
        raise _BadPage("not a page: no items list")
    total, pages = data.get("total"), data.get("pages")
    for name, value in (("total", total), ("pages", pages)):
        if value is not None and (type(value) is not int or value < 0):
            raise _BadPage(f"not a page: {name} is {value!r}")
    return Page(number, data["items"], total, pages, len(body), lenient)


def _stdlib_loads(body: bytes, error: str) -> Any:
    """The stdlib's reading of a body orjson refused, if that was only for lone surrogates
    (which the stdlib keeps as they are); None otherwise."""
    if "surrogate" not in error:
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


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


# ---- the HTTP transports ---------------------------------------------------------------------


class _Timeout(Exception):
    """The request timed out (connect or read); `error` is the one-line text."""


class _TransportError(Exception):
    """The connection failed (refused, reset, closed mid-body, bad HTTP)."""


class _TooLarge(Exception):
    """The response is larger than the cap; `str()` says how that was seen."""


def _over_cap(length: str | None, max_bytes: int) -> bool:
    """Does a Content-Length header announce more than `max_bytes`?"""
    try:
        return length is not None and int(length) > max_bytes
    except ValueError:
        return False


def _inflate(content: bytes, encoding: str, max_bytes: int) -> bytes:
    """A gzip/deflate body inflated, at most `max_bytes` of it (a small body may inflate to
    gigabytes); _TooLarge beyond."""
    inflater = zlib.decompressobj(47 if encoding == "gzip" else 15)
    out = inflater.decompress(content, max_bytes + 1)
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise _TooLarge(f"inflates past {max_bytes} bytes")
    return out + inflater.flush()


@dataclass(frozen=True)
class _Response:
    status: int
    reason: str
    retry_after: str | None
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


_HEADERS = {"Accept": "application/json", "User-Agent": "moovitamix-ingestion"}


class _HttpxTransport:
    """httpx, one pool of `concurrency` connections (used with an injected transport)."""

    def __init__(
        self,
        base_url: str,
        concurrency: int,
        timeouts: Timeouts,
        transport: httpx.BaseTransport | None,
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._max_bytes = max_bytes
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeouts.httpx(),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            headers=_HEADERS,
            transport=transport,
        )

    def get(self, path: str, params: dict[str, int]) -> _Response:
        try:
            with self._http.stream("GET", path, params=params) as response:
                length = response.headers.get("Content-Length")
                if _over_cap(length, self._max_bytes):
                    raise _TooLarge(f"Content-Length {length}")
                chunks, size = [], 0
                for chunk in response.iter_bytes():  # decoded: gzip inflates chunk by chunk
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise _TooLarge(f"more than {self._max_bytes} bytes read")
                    chunks.append(chunk)
        except httpx.TimeoutException as exc:
            raise _Timeout(_error_text(exc)) from None
        except httpx.TransportError as exc:
            raise _TransportError(_error_text(exc)) from None
        return _Response(
            response.status_code,
            response.reason_phrase,
            response.headers.get("Retry-After"),
            b"".join(chunks),
        )

    def close(self) -> None:
        self._http.close()


class _Connection(http.client.HTTPConnection):
    """An HTTP/1.1 connection with the connect timeout on connect, the read timeout after."""

    read_timeout_s: float = 30.0

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_timeout_s)


class _HttpsConnection(http.client.HTTPSConnection):
    read_timeout_s: float = 30.0

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.read_timeout_s)


class _HttpClientTransport:
    """http.client: one keep-alive connection per calling thread, reopened after any error."""

    def __init__(
        self, base_url: str, timeouts: Timeouts, max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    ) -> None:
        self._max_bytes = max_bytes
        url = urlsplit(base_url)
        self._secure = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        self._timeouts = timeouts
        self._local = threading.local()
        self._open: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    @staticmethod
    def usable(base_url: str) -> bool:
        """False when a proxy applies to `base_url` (httpx honours proxies, we would not)."""
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            return False
        proxies = urllib.request.getproxies()
        if url.scheme not in proxies and "all" not in proxies:
            return True
        return bool(urllib.request.proxy_bypass(url.hostname))

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            # An idle keep-alive connection the server has closed reads as readable: reopen.
            readable, _, _ = select.select([conn.sock], [], [], 0)
            if readable:
                self._drop(conn)
                conn = None
        if conn is None:
            cls = _HttpsConnection if self._secure else _Connection
            conn = cls(self._host, self._port, timeout=self._timeouts.connect_s)
            conn.read_timeout_s = self._timeouts.read_s  # type: ignore[attr-defined]
            self._local.conn = conn
            with self._lock:
                self._open.add(conn)
        return conn

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            self._open.discard(conn)

    def get(self, path: str, params: dict[str, int]) -> _Response:
        conn = self._connection()
        try:
            conn.request("GET", f"{self._prefix}{path}?{urlencode(params)}", headers=_HEADERS)
            response = conn.getresponse()
            content = self._read(response)
            encoding = (response.getheader("Content-Encoding") or "").strip().lower()
            if encoding in ("gzip", "deflate"):
                content = _inflate(content, encoding, self._max_bytes)
        except _TooLarge:
            self._drop(conn)  # the rest of the body is not read: the connection is unusable
            raise
        except TimeoutError as exc:
            self._drop(conn)
            raise _Timeout(_error_text(exc) if str(exc) else "TimeoutError: timed out") from None
        except (OSError, http.client.HTTPException, zlib.error) as exc:
            self._drop(conn)
            raise _TransportError(_error_text(exc)) from None
        except BaseException:
            self._drop(conn)
            raise
        if response.will_close:
            self._drop(conn)
        return _Response(
            response.status, response.reason, response.getheader("Retry-After"), content
        )

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        """The body, read with the cap: a larger Content-Length is refused unread; a body of
        unknown length (chunked, or until close) is read a chunk at a time up to the cap."""
        length = response.getheader("Content-Length")
        if _over_cap(length, self._max_bytes):
            raise _TooLarge(f"Content-Length {length}")
        if response.length is not None:
            return response.read()
        chunks, size = [], 0
        while chunk := response.read(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise _TooLarge(f"more than {self._max_bytes} bytes read")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()


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
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
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
        self.max_response_bytes = max_response_bytes
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not security)
        self._rng_lock = threading.Lock()
        self._http: _HttpxTransport | _HttpClientTransport
        if transport is None and _HttpClientTransport.usable(self.base_url):
            self._http = _HttpClientTransport(self.base_url, self.timeouts, max_response_bytes)
        else:
            self._http = _HttpxTransport(
                self.base_url, concurrency, self.timeouts, transport, max_response_bytes
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
                response = self._http.get(f"/{endpoint}", params)
            except _Timeout as exc:
                counters.failure()
                cause, error = "timeout", str(exc)
            except _TransportError as exc:
                counters.failure()
                cause, error = "connection", str(exc)
            except _TooLarge as exc:
                counters.failure()
                raise FetchFailed(
                    endpoint,
                    number,
                    f"response larger than the {_megabytes(self.max_response_bytes)} cap "
                    f"({exc}; INGESTION_MAX_RESPONSE_MB sets the cap) (not retried)",
                ) from None
            else:
                status = response.status
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
                    error = f"HTTP {status} {response.reason}".strip()
                    wait = retry_after_s(response.retry_after)
                else:
                    body = _printable(response.text[:200])
                    raise FetchFailed(
                        endpoint,
                        number,
                        f"HTTP {status} {response.reason} (not retried): {body}".strip(),
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


def _printable(text: str) -> str:
    """Untrusted text for a one-line message: no control characters (no terminal escapes)."""
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _megabytes(n: int) -> str:
    return f"{n / 2**20:g} MB"


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
