"""HTTP responses for the faults: error statuses and a connection dropped mid-body."""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

DROP_LOG_MESSAGE = "ASGI callable returned without completing response."

_BODIES = {
    500: ("text", "Internal Server Error"),
    502: (
        "html",
        "<html><head><title>502 Bad Gateway</title></head><body><center>"
        "<h1>502 Bad Gateway</h1></center></body></html>",
    ),
    503: ("json", {"detail": "Service Unavailable"}),
    504: (
        "html",
        "<html><head><title>504 Gateway Time-out</title></head><body><center>"
        "<h1>504 Gateway Time-out</h1></center></body></html>",
    ),
    429: ("json", {"detail": "Too Many Requests"}),
}


def error_response(status: int, retry_after_s: float | None = None) -> Response:
    """What a server or a proxy in front of it answers with `status`."""
    kind, body = _BODIES[status]
    headers = {}
    if retry_after_s is not None:
        headers["Retry-After"] = f"{retry_after_s:g}"
    if kind == "json":
        return JSONResponse(body, status_code=status, headers=headers)
    media = "text/html" if kind == "html" else "text/plain"
    return PlainTextResponse(str(body), status_code=status, headers=headers, media_type=media)


class DroppedResponse(Response):
    """Declares the whole body's Content-Length, sends part of it, then ends the exchange.

    uvicorn then closes the connection: the client sees a 200 whose body ends early.
    """

    def __init__(self, body: bytes, sent_fraction: float = 0.5) -> None:
        super().__init__(content=body, media_type="application/json")
        self._sent = body[: int(len(body) * sent_fraction)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self._sent, "more_body": True})


class _QuietDrops(logging.Filter):
    """Hide uvicorn's error line for the connections the simulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != DROP_LOG_MESSAGE


def silence_intentional_drops() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in logger.filters):
        logger.addFilter(_QuietDrops())
