"""HTTP for the MooVitamix API on dlt's REST client and its `requests` helper, configured:
retries with exponential backoff (honouring `Retry-After`) on timeouts, dropped connections,
429, 5xx and a 200 whose body is not a page (malformed JSON); timeouts for connect and read.

Two small hooks on each response, because the API is untrusted: a body is read with the
response cap (a larger Content-Length is refused before reading, a chunked or gzip body is
abandoned at the cap; not retried), and it is parsed into a `Page` (orjson; the stdlib for a
body orjson refuses only for lone surrogates, whose records are then checked one by one).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests
from dlt.sources.helpers.requests import Client
from dlt.sources.helpers.rest_client import RESTClient

from ingestion.config import MAX_RESPONSE_MB_ENV, IngestionConfig


class FetchFailed(RuntimeError):
    """A page could not be read; the message is one line: endpoint, page, last error."""

    def __init__(self, endpoint: str, page: int, error: str) -> None:
        self.endpoint = endpoint
        super().__init__(f"{endpoint} page {page}: {error}")


class TooLarge(Exception):
    pass


class BadPage(ValueError):
    pass


@dataclass
class Counters:
    """What one endpoint's reads cost; updated from the fetching threads."""

    requests: int = 0
    pages: int = 0
    bytes: int = 0
    retries: Counter[str] = field(default_factory=Counter)  # failed attempts by cause
    http_errors: Counter[str] = field(default_factory=Counter)  # by status
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass(frozen=True)
class Page:
    number: int
    items: list[Any]
    total: int | None
    pages: int | None
    careful: bool  # its strings may hold what Postgres cannot store: check each record


def parse_page(number: int, body: bytes, max_field_bytes: int) -> Page:
    """A page envelope {"items": [...], "total", "pages", ...}; BadPage if it is not one."""
    lenient = False
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            if "surrogate" not in str(exc):
                raise ValueError(exc) from None
            data, lenient = json.loads(body), True
        except (ValueError, RecursionError):
            raise BadPage(f"malformed JSON ({exc})") from None
    if type(data) is not dict or type(data.get("items")) is not list:
        raise BadPage("not a page: no items list")
    for name in ("total", "pages"):
        value = data.get(name)
        if value is not None and (type(value) is not int or value < 0):
            raise BadPage(f"not a page: {name} is {str(value)[:40]!r}")
    careful = lenient or b"\\u0000" in body or len(body) > max_field_bytes
    return Page(number, data["items"], data.get("total"), data.get("pages"), careful)


def _too_large(cap: int, how: str) -> str:
    return f"response larger than the {cap / 2**20:g} MB cap ({how}; {MAX_RESPONSE_MB_ENV} " + (
        "sets the cap)"
    )


def _text(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class Api:
    """GET one page of an endpoint, retried as configured, with its costs counted."""

    def __init__(self, base_url: str, config: IngestionConfig) -> None:
        self.base_url, self.config = base_url.rstrip("/"), config
        self._local = threading.local()
        self.client = Client(
            request_timeout=(config.connect_timeout_s, config.read_timeout_s),
            max_connections=config.concurrency + 2,
            raise_for_status=False,
            status_codes=(),  # every retry decision is `_retry`'s, so it counts the causes
            exceptions=(),
            request_max_attempts=config.max_attempts,
            retry_condition=self._retry,
            request_backoff_factor=config.backoff_base_s,
            request_max_retry_delay=config.max_retry_delay_s,
            # requests reads proxy settings from the environment on every call: only if set
            session_attrs={"trust_env": bool(urllib.request.getproxies())},
        )

    def _rest(self) -> RESTClient:
        rest = getattr(self._local, "rest", None)
        if rest is None:  # dlt's client keeps one session per thread
            rest = self._local.rest = RESTClient(self.base_url, session=self.client.session)
        return rest

    def page(self, endpoint: str, number: int, counters: Counters) -> Page:
        self._local.counters, self._local.number = counters, number
        params = {"page": number, "size": self.config.page_size}
        try:
            response = self._rest().get(
                f"/{endpoint}", params=params, stream=True, hooks={"response": [self._read]}
            )
        except TooLarge as exc:
            raise FetchFailed(endpoint, number, f"{exc} (not retried)") from None
        except (requests.RequestException, BadPage) as exc:
            attempts = self.config.max_attempts
            raise FetchFailed(
                endpoint, number, f"{attempts} attempts, last: {_text(exc)}"
            ) from None
        if response.status_code >= 400:
            body = response.moovitamix_body.decode(errors="replace")  # type: ignore[attr-defined]
            text = "".join(c for c in body if c.isprintable())[:200]
            retried = response.status_code == 429 or response.status_code >= 500
            how = f"{self.config.max_attempts} attempts" if retried else "not retried"
            raise FetchFailed(
                endpoint, number, f"HTTP {response.status_code} {response.reason} ({how}): {text}"
            )
        with counters.lock:
            counters.pages += 1
        return response.moovitamix_page  # type: ignore[attr-defined]

    def _read(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: read the body within the cap, count it, parse a page out of it."""
        counters: Counters = self._local.counters
        cap = self.config.max_response_bytes
        self._local.answered = True
        with counters.lock:
            counters.requests += 1
            if response.status_code >= 400:
                counters.http_errors[str(response.status_code)] += 1
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > cap:
            response.close()
            raise TooLarge(_too_large(cap, f"Content-Length {length}"))
        body = bytearray()
        for chunk in response.iter_content(2**20):
            body += chunk
            if len(body) > cap:
                response.close()
                raise TooLarge(_too_large(cap, f"more than {cap} bytes read"))
        with counters.lock:
            counters.bytes += len(body)
        response.moovitamix_body = bytes(body)  # type: ignore[attr-defined]
        if response.status_code < 400:
            page = parse_page(self._local.number, bytes(body), self.config.max_field_bytes)
            response.moovitamix_page = page  # type: ignore[attr-defined]

    def _retry(self, response: requests.Response | None, exc: BaseException | None) -> bool:
        """dlt's retry predicate, called after every attempt: retry? (and count why)."""
        answered, self._local.answered = getattr(self._local, "answered", False), False
        if isinstance(exc, requests.Timeout):
            cause = "timeout"
        elif isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            cause = "connection"
        elif isinstance(exc, BadPage):
            cause = "malformed_json"
        elif (
            exc is None and response is not None and response.status_code in (429, *range(500, 600))
        ):
            cause = f"http_{'429' if response.status_code == 429 else '5xx'}"
        else:
            return False
        counters: Counters = self._local.counters
        with counters.lock:
            counters.retries[cause] += 1
            counters.requests += not answered  # no response: `_read` did not count it
        return True
