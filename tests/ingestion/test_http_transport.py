"""The client's own HTTP path (http.client, a keep-alive connection per thread) against a real
local server: the same retry causes as with httpx, and idle connections the server closed
are reopened without counting as failures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from ingestion.moovitamix_source.client import (
    ApiClient,
    FetchFailed,
    RequestCounters,
    RetryPolicy,
    Timeouts,
    _HttpClientTransport,
)

FAST = RetryPolicy(max_attempts=3, backoff_base_s=0.001, backoff_max_s=0.01)
Behaviour = Callable[[BaseHTTPRequestHandler, int, int], bool]  # True: answered


def page_body(number: int, total: int = 250) -> bytes:
    start = (number - 1) * 100
    items = [{"id": i} for i in range(start + 1, min(start + 100, total) + 1)]
    return orjson.dumps({"items": items, "total": total, "page": number, "pages": 3})


@pytest.fixture
def server() -> Iterator[Callable[[Behaviour | None], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(behaviour: Behaviour | None = None) -> str:
        attempts: dict[int, int] = {}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                number = int(parse_qs(urlsplit(self.path).query)["page"][0])
                with lock:
                    attempt = attempts[number] = attempts.get(number, 0) + 1
                if behaviour is not None and behaviour(self, number, attempt):
                    return
                body = page_body(number)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def client(url: str, **kwargs: object) -> ApiClient:
    kwargs.setdefault("timeouts", Timeouts(connect_s=1.0, read_s=0.3))
    c = ApiClient(url, retry=FAST, **kwargs)  # type: ignore[arg-type]
    assert isinstance(c._http, _HttpClientTransport)
    return c


def first_attempt(answer: Callable[[BaseHTTPRequestHandler], None]) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, number: int, attempt: int) -> bool:
        if attempt == 1:
            answer(handler)
            return True
        return False

    return behaviour


def status(code: int, body: bytes = b"", **headers: str) -> Callable:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        for name, value in headers.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def cut_mid_body(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "5000")
    handler.end_headers()
    handler.wfile.write(b'{"items": [')
    handler.wfile.flush()
    handler.connection.shutdown(socket.SHUT_RDWR)
    handler.close_connection = True


def too_slow(handler: BaseHTTPRequestHandler) -> None:
    time.sleep(0.6)
    status(200, page_body(1))(handler)


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (status(503), "http_5xx"),
        (status(429, Retry_After="0"), "http_429"),
        (status(200, b'{"items": ['), "malformed_json"),
        (cut_mid_body, "connection"),
        (too_slow, "timeout"),
    ],
)
def test_transient_failures_are_retried(server: Callable, answer: Callable, cause: str) -> None:
    counters = RequestCounters()
    with client(server(first_attempt(answer))) as c:
        page = c.get_page("tracks", 2, counters)
    assert [r["id"] for r in page.items][:2] == [101, 102]
    assert counters.retries == {cause: 1}
    assert counters.requests == 2


def test_a_refused_connection_is_retried_then_named(server: Callable) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    counters = RequestCounters()
    with client(f"http://127.0.0.1:{port}") as c, pytest.raises(FetchFailed) as failed:
        c.get_page("users", 1, counters)
    assert str(failed.value).startswith("users page 1: ConnectionRefusedError")
    assert "(gave up after 3 attempts)" in str(failed.value)
    assert counters.retries == {"connection": 2}


def test_retry_after_is_honoured(server: Callable) -> None:
    url = server(first_attempt(status(503, Retry_After="0.4")))
    started = time.monotonic()
    with client(url) as c:
        c.get_page("users", 1, RequestCounters())
    assert time.monotonic() - started >= 0.4


def test_client_errors_are_not_retried_and_show_the_body(server: Callable) -> None:
    url = server(first_attempt(status(404, b'{"detail": "Not Found"}')))
    counters = RequestCounters()
    with client(url) as c, pytest.raises(FetchFailed) as failed:
        c.get_page("tracks", 3, counters)
    assert str(failed.value) == (
        'tracks page 3: HTTP 404 Not Found (not retried): {"detail": "Not Found"}'
    )
    assert counters.requests == 1


def test_an_idle_connection_closed_by_the_server_is_reopened(server: Callable) -> None:
    def close_after_answer(handler: BaseHTTPRequestHandler, number: int, attempt: int) -> bool:
        handler.close_connection = True  # answers, then closes (no "Connection: close" sent)
        return False

    counters = RequestCounters()
    with client(server(close_after_answer)) as c:
        c.get_page("tracks", 1, counters)
        time.sleep(0.1)  # the server has closed the kept-alive connection by now
        c.get_page("tracks", 2, counters)
    assert counters.requests == 2 and not counters.retries


def test_read_pages_over_http(server: Callable) -> None:
    with client(server(), concurrency=2) as c:
        pages = list(c.read_pages("tracks", RequestCounters()))
    assert sorted(r["id"] for p in pages for r in p.items) == list(range(1, 251))


def test_a_proxy_in_the_environment_means_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "")
    assert not _HttpClientTransport.usable("http://api.example")
    monkeypatch.setenv("no_proxy", "api.example")
    assert _HttpClientTransport.usable("http://api.example")
