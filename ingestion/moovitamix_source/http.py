"""HTTP for the MooVitamix API: dlt's REST client on its `requests` helper, retries configured;
a response hook reads the body within the response cap and parses it into a `Page`."""

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


class EndpointFailed(RuntimeError):
    """An endpoint could not be read completely; the message is one line and names it."""

    def __init__(self, endpoint: str, message: str) -> None:
        self.endpoint = endpoint
        super().__init__(message)


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
    try:
        data, lenient = orjson.loads(body), False
    except orjson.JSONDecodeError as exc:
        try:
            data, lenient = json.loads(body) if "surrogate" in str(exc) else None, True
        except (ValueError, RecursionError):
            data = None
        if data is None:
            raise BadPage(f"malformed JSON ({exc})") from None
    if type(data) is not dict or type(data.get("items")) is not list:
        raise BadPage("not a page: no items list")
    for name in ("total", "pages"):
        if (value := data.get(name)) is not None and (type(value) is not int or value < 0):
            raise BadPage(f"not a page: {name} is {str(value)[:40]!r}")
    careful = lenient or b"\\u0000" in body or len(body) > max_field_bytes
    return Page(number, data["items"], data.get("total"), data.get("pages"), careful)


class Api:
    """GET one page of an endpoint, retried as configured, with its costs counted."""

    def __init__(self, base_url: str, config: IngestionConfig) -> None:
        self.base_url, self.config, self._local = base_url.rstrip("/"), config, threading.local()
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

    def page(self, endpoint: str, number: int, counters: Counters) -> Page:
        local = self._local
        local.counters, local.number = counters, number
        if getattr(local, "rest", None) is None:  # dlt's client: one session per thread
            local.rest = RESTClient(self.base_url, session=self.client.session)
        where, attempts = f"{endpoint} page {number}", self.config.max_attempts
        try:
            params = {"page": number, "size": self.config.page_size}
            hooks = {"response": [self._read]}
            response = local.rest.get(f"/{endpoint}", params=params, stream=True, hooks=hooks)
        except TooLarge as exc:
            raise EndpointFailed(endpoint, f"{where}: {exc} (not retried)") from None
        except (requests.RequestException, BadPage) as exc:
            text = (str(exc).strip().splitlines() or [""])[0][:200]
            last = f"{type(exc).__name__}{': ' + text if text else ''}"
            raise EndpointFailed(endpoint, f"{where}: {attempts} attempts, last: {last}") from None
        if response.status_code >= 400:
            body = response.moovitamix_body.decode(errors="replace")
            text = "".join(c for c in body if c.isprintable())[:200]
            how = f"{attempts} attempts" if self._transient(response) else "not retried"
            status = f"HTTP {response.status_code} {response.reason}"
            raise EndpointFailed(endpoint, f"{where}: {status} ({how}): {text}")
        with counters.lock:
            counters.pages += 1
        return response.moovitamix_page

    def _read(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: read the body within the cap, count it, parse a page out of it."""
        counters, cap = self._local.counters, self.config.max_response_bytes
        self._local.answered = True
        with counters.lock:
            counters.requests += 1
            counters.http_errors.update([str(response.status_code)] * (response.status_code >= 400))
        length = response.headers.get("Content-Length", "")
        body, how = bytearray(), f"Content-Length {length}"
        if not (length.isdigit() and int(length) > cap):
            for chunk in response.iter_content(2**20):
                body += chunk
                if len(body) > cap:
                    how = f"more than {cap} bytes read"
                    break
            else:
                how = ""
        if how:
            response.close()
            limit = f"the {cap / 2**20:g} MB cap ({how}; {MAX_RESPONSE_MB_ENV} sets the cap)"
            raise TooLarge(f"response larger than {limit}")
        with counters.lock:
            counters.bytes += len(body)
        response.moovitamix_body = bytes(body)  # our attributes on the response
        if response.status_code < 400:
            page = parse_page(self._local.number, bytes(body), self.config.max_field_bytes)
            response.moovitamix_page = page

    @staticmethod
    def _transient(response: requests.Response) -> bool:
        return response.status_code == 429 or response.status_code >= 500

    def _retry(self, response: requests.Response | None, exc: BaseException | None) -> bool:
        """dlt's retry predicate, called after every attempt: retry? (and count why)."""
        answered, self._local.answered = getattr(self._local, "answered", False), False
        if isinstance(exc, requests.Timeout):
            cause = "timeout"
        elif isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            cause = "connection"
        elif isinstance(exc, BadPage):
            cause = "malformed_json"
        elif exc is None and response is not None and self._transient(response):
            cause = f"http_{'429' if response.status_code == 429 else '5xx'}"
        else:
            return False
        counters = self._local.counters
        with counters.lock:
            counters.retries[cause] += 1
            counters.requests += not answered  # no response: `_read` did not count it
        return True
