"""The response cap: a response larger than `max_response_bytes` is refused without being read
whole (a Content-Length above it unread, a body of unknown length at the cap, a gzip body
inflated only up to it), is not retried, and the error says endpoint, page and size."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler

import httpx
import orjson
import pytest

from ingestion.moovitamix_source.client import ApiClient, FetchFailed, RequestCounters, parse_page
from tests.ingestion.test_http_transport import FAST, client, page_body, server  # noqa: F401

CAP = 64 * 1024


def huge_length(handler: BaseHTTPRequestHandler, number: int, attempt: int) -> bool:
    handler.send_response(200)
    handler.send_header("Content-Length", str(10 * 2**30))  # 10 GB announced, a few sent
    handler.end_headers()
    handler.wfile.write(b'{"items": [')
    handler.close_connection = True
    return True


def chunked(size: int) -> Callable[[BaseHTTPRequestHandler, int, int], bool]:
    def behaviour(handler: BaseHTTPRequestHandler, number: int, attempt: int) -> bool:
        body = orjson.dumps({"pad": "x" * size, **orjson.loads(page_body(number))})
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for at in range(0, len(body), 8192):
            part = body[at : at + 8192]
            handler.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")
        return True

    return behaviour


def gzip_bomb(handler: BaseHTTPRequestHandler, number: int, attempt: int) -> bool:
    body = gzip.compress(b'{"items": [], "pad": "' + b"0" * (8 * 2**20) + b'"}')
    handler.send_response(200)
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    return True


@pytest.mark.parametrize(
    ("behaviour", "how"),
    [
        (huge_length, f"Content-Length {10 * 2**30}"),
        (chunked(2 * CAP), f"more than {CAP} bytes read"),
        (gzip_bomb, f"inflates past {CAP} bytes"),
    ],
)
def test_a_response_over_the_cap_is_refused_not_retried(
    server: Callable,  # noqa: F811
    behaviour: Callable,
    how: str,
) -> None:
    counters = RequestCounters()
    with client(server(behaviour), max_response_bytes=CAP) as c, pytest.raises(FetchFailed) as e:
        c.get_page("users", 2, counters)
    assert str(e.value) == (
        f"users page 2: response larger than the 0.0625 MB cap ({how}; "
        "INGESTION_MAX_RESPONSE_MB sets the cap) (not retried)"
    )
    assert counters.requests == 1 and not counters.retries


def test_a_chunked_response_under_the_cap_is_read(server: Callable) -> None:  # noqa: F811
    with client(server(chunked(CAP // 2)), max_response_bytes=CAP) as c:
        page = c.get_page("users", 2, RequestCounters())
    assert [r["id"] for r in page.items][:2] == [101, 102]


def test_the_httpx_path_has_the_same_cap() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.dumps({"items": [], "total": 0, "pad": "x" * (2 * CAP)})
        if request.url.params["page"] == "1":  # no Content-Length: streamed
            return httpx.Response(200, stream=httpx.ByteStream(body), headers={})
        return httpx.Response(200, content=body)

    for page in (1, 2):
        counters = RequestCounters()
        api = ApiClient(
            "http://api.test",
            retry=FAST,
            transport=httpx.MockTransport(handler),
            max_response_bytes=CAP,
        )
        with api, pytest.raises(FetchFailed, match=rf"tracks page {page}: response larger"):
            api.get_page("tracks", page, counters)
        assert counters.requests == 1


def test_a_lone_surrogate_does_not_make_the_page_malformed() -> None:
    page = parse_page(1, b'{"items": [{"id": 1, "name": "a \\ud800 b"}], "total": 1}')
    assert page.lenient and page.items == [{"id": 1, "name": "a \ud800 b"}]
