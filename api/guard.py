"""The request guard: every request gets an answer in the one error shape, and no body is read
past its limit.

A pure ASGI middleware just inside Starlette's outermost error middleware:

- A body is counted while it is read: past `max_body_bytes` (JSON routes) or
  `max_upload_bytes` (the upload routes, plus room for the form's own fields) reading stops
  with a 413 naming the limit. A `Content-Length` already over the limit is refused before
  a byte of the body is read, so a 2 GB body is never buffered, spooled or parsed.
- A NUL character in the URL's path or query is a 400 here: no route takes one, and Postgres
  cannot compare text with one.
- An exception that escapes the routes and their handlers (one raised inside an exception
  handler, a body read failing, a bug) is answered here while nothing has been sent: a 503
  with `Retry-After` when the job store is away, else a 500 with a logged reference. After a
  response has started nothing can be answered any more; the exception goes on to the
  server, which ends the connection (a truncated stream is the only honest signal left), so
  routes that stream start only once their first chunk is in hand (`api/downloads.py`).
"""

from __future__ import annotations

import logging

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BodyTooLarge, error_body, unexpected_response
from core.settings import get_settings

log = logging.getLogger(__name__)

# Routes whose body is an upload (multipart), with the upload limit; every other body is JSON.
UPLOAD_ROUTES = {
    ("POST", "/v1/files"),
    ("POST", "/v1/document_batches"),
    ("POST", "/console/batches"),
}
FORM_OVERHEAD_BYTES = 1 << 20  # a multipart body's boundaries, part headers and small fields


def _megabytes(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def body_limit(method: str, path: str) -> tuple[int, str]:
    """The most bytes this route's body may have, and the limit's name."""
    settings = get_settings()
    if (method, path.rstrip("/")) in UPLOAD_ROUTES:
        return settings.max_upload_bytes + FORM_OVERHEAD_BYTES, "max_upload_bytes"
    return settings.max_body_bytes, "max_body_bytes"


def too_large(limit: int, name: str, size: int | None = None) -> BodyTooLarge:
    told = f" ({size} bytes)" if size is not None else ""
    shown = limit - FORM_OVERHEAD_BYTES if name == "max_upload_bytes" else limit
    return BodyTooLarge(
        f"the request body{told} is larger than {_megabytes(shown)} ({name}, "
        f"LLMQUEUE_{name.upper()}); send less in one request"
    )


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul = _nul_in_url(scope)
        if nul is not None:  # no route takes one, and Postgres text cannot hold one
            await JSONResponse(
                error_body(400, f"the URL's {nul} contains a NUL character (%00)", nul, "invalid_value"),
                status_code=400,
            )(scope, receive, send)
            return
        limit, name = body_limit(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            response = unexpected_response(too_large(limit, name, declared))
            await response(scope, receive, send)
            return
        started = False
        read = 0

        async def limited_receive() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise too_large(limit, name)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except Exception as exc:
            if started:
                log.warning("%s %s failed after its answer started: %s", scope["method"], scope["path"], exc)
                raise
            response = unexpected_response(exc)
            await response(scope, receive, send)


def _nul_in_url(scope: Scope) -> str | None:
    """'path' or 'query' when that part of the URL holds a NUL character, else None."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        return "query"
    return None


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
