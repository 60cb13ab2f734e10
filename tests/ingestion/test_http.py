"""HTTP on dlt's REST client against a real local server: what is retried (and counted by
cause), what is not, Retry-After, giving up, and the response cap."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from ingestion.config import IngestionConfig
from ingestion.moovitamix_source.http import Api, Counters, EndpointFailed, parse_page
from tests.waiting import wait_until

CAP = 64 * 1024
FAST = IngestionConfig(
    max_attempts=3, backoff_base_s=0.001, max_retry_delay_s=1.0,
    connect_timeout_s=1.0, read_timeout_s=0.3, max_response_bytes=CAP,
)  # fmt: skip
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
                status(200, page_body(number))(self)

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        servers.append(httpd)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def first_attempt(answer: Callable[[BaseHTTPRequestHandler], None]) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler, number: int, attempt: int) -> bool:
        if attempt == 1:
            answer(handler)
        return attempt == 1

    return behaviour


def always(answer: Callable[[BaseHTTPRequestHandler], None]) -> Behaviour:
    return lambda handler, number, attempt: answer(handler) or True


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
    time.sleep(0.6)  # sleep: a server slower than the 0.3 s read timeout (the timeout must fire)
    status(200, page_body(1))(handler)


@pytest.mark.parametrize(
    ("answer", "cause"),
    [
        (status(500), "http_5xx"),
        (status(503), "http_5xx"),
        (status(429), "http_429"),
        (status(429, Retry_After="0"), "http_429"),
        (status(200, b'{"items": ['), "malformed_json"),
        (status(200, b"<html></html>"), "malformed_json"),
        (status(200, b'{"items": null}'), "malformed_json"),
        (status(200, b'{"items": [], "total": -1}'), "malformed_json"),
        (cut_mid_body, "connection"),
        (too_slow, "timeout"),
    ],
)
def test_transient_failures_are_retried(server: Callable, answer: Callable, cause: str) -> None:
    counters = Counters()
    page = Api(server(first_attempt(answer)), FAST).page("tracks", 2, counters)
    assert [r["id"] for r in page.items][:2] == [101, 102]
    assert counters.retries == {cause: 1}
    assert counters.requests == 2 and counters.pages == 1


def test_http_errors_are_counted_by_status(server: Callable) -> None:
    counters = Counters()
    Api(server(first_attempt(status(503))), FAST).page("tracks", 1, counters)
    Api(server(first_attempt(status(429))), FAST).page("tracks", 1, counters)
    assert counters.http_errors == {"503": 1, "429": 1}


def test_a_refused_connection_is_retried_then_named(server: Callable) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    counters = Counters()
    with pytest.raises(EndpointFailed) as failed:
        Api(f"http://127.0.0.1:{port}", FAST).page("users", 1, counters)
    assert str(failed.value).startswith("users page 1: 3 attempts, last: ConnectionError")
    assert counters.retries == {"connection": 3} and counters.requests == 3


def test_giving_up_names_endpoint_page_and_last_error(server: Callable) -> None:
    counters = Counters()
    with pytest.raises(EndpointFailed) as failed:
        Api(server(always(status(503, b"busy"))), FAST).page("tracks", 2, counters)
    assert str(failed.value) == "tracks page 2: HTTP 503 Service Unavailable (3 attempts): busy"
    assert counters.requests == 3


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sleeps of this thread (the retries' waits), recorded instead of slept: an injected
    clock, so the waits asked for are checked, not how long the machine took."""
    asked: list[float] = []
    real, me = time.sleep, threading.get_ident()

    def sleep(seconds: float) -> None:
        if threading.get_ident() == me:
            asked.append(seconds)
        else:
            real(seconds)  # sleep: the test servers' threads keep the real one

    monkeypatch.setattr(time, "sleep", sleep)
    return asked


def test_retry_after_is_honoured(server: Callable, waits: list[float]) -> None:
    url = server(first_attempt(status(503, Retry_After="1")))
    Api(url, FAST).page("users", 1, Counters())
    assert waits == [1.0]


def test_retry_after_is_capped(server: Callable, waits: list[float]) -> None:
    url = server(first_attempt(status(429, Retry_After="3600")))
    Api(url, FAST).page("users", 1, Counters())
    assert waits == [FAST.max_retry_delay_s]  # not 3600


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried_and_show_the_body(server: Callable, code: int) -> None:
    counters = Counters()
    with pytest.raises(EndpointFailed) as failed:
        Api(server(first_attempt(status(code, b'{"detail": "No"}'))), FAST).page("t", 3, counters)
    phrase = HTTPStatus(code).phrase
    assert str(failed.value) == f't page 3: HTTP {code} {phrase} (not retried): {{"detail": "No"}}'
    assert counters.requests == 1 and not counters.retries


def test_an_idle_connection_closed_by_the_server_is_reopened(server: Callable) -> None:
    closed: list[bool] = []

    def close_after_answer(handler: BaseHTTPRequestHandler, number: int, attempt: int) -> bool:
        handler.close_connection = True  # answers, then closes (no "Connection: close" sent)
        status(200, page_body(number))(handler)
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)  # closed, before the next request comes
        closed.append(True)
        return True

    counters = Counters()
    api = Api(server(close_after_answer), FAST)
    api.page("tracks", 1, counters)
    wait_until(lambda: closed, "the server to close the kept-alive connection")
    api.page("tracks", 2, counters)
    assert counters.requests == 2 and not counters.retries


# ---- the response cap ----------------------------------------------------------------------


def huge_length(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10 * 2**30))  # 10 GB announced, a few sent
    handler.end_headers()
    handler.wfile.write(b'{"items": [')
    handler.close_connection = True


def chunked(size: int) -> Callable[[BaseHTTPRequestHandler], None]:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        body = orjson.dumps({"pad": "x" * size, **orjson.loads(page_body(2))})
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for at in range(0, len(body), 8192):
            part = body[at : at + 8192]
            handler.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")

    return answer


def gzip_bomb(handler: BaseHTTPRequestHandler) -> None:
    body = gzip.compress(b'{"items": [], "pad": "' + b"0" * (8 * 2**20) + b'"}')
    status(200, body, Content_Encoding="gzip")(handler)


@pytest.mark.parametrize(
    ("answer", "how"),
    [
        (huge_length, f"Content-Length {10 * 2**30}"),
        (chunked(2 * CAP), f"more than {CAP} bytes read"),
        (gzip_bomb, f"more than {CAP} bytes read"),  # inflated only up to the cap
    ],
)
def test_a_response_over_the_cap_is_refused_not_retried(
    server: Callable, answer: Callable, how: str
) -> None:
    counters = Counters()
    with pytest.raises(EndpointFailed) as failed:
        Api(server(always(answer)), FAST).page("users", 2, counters)
    assert str(failed.value) == (
        f"users page 2: response larger than the 0.0625 MB cap ({how}; "
        "INGESTION_MAX_RESPONSE_MB sets the cap) (not retried)"
    )
    assert counters.requests == 1 and not counters.retries


def test_a_chunked_response_under_the_cap_is_read(server: Callable) -> None:
    page = Api(server(always(chunked(CAP // 2))), FAST).page("users", 2, Counters())
    assert [r["id"] for r in page.items][:2] == [101, 102]


def test_a_lone_surrogate_does_not_make_the_page_malformed() -> None:
    page = parse_page(1, b'{"items": [{"id": 1, "name": "a \\ud800 b"}], "total": 1}', CAP)
    assert page.careful and page.items == [{"id": 1, "name": "a \ud800 b"}]
    assert not parse_page(1, page_body(1), CAP).careful
    assert parse_page(1, b'{"items": [{"name": "a\\u0000"}]}', CAP).careful  # a NUL
