"""The console's client for the JSON API: in-process ASGI calls, as the signed-in key.

Every page reads and writes through the same `/v1` routes an API client uses, with the
signed-in key as its `Authorization: Bearer`, so the console gets exactly the API's
ownership checks (another key's job is a 404 here too), admin checks, validation and error
messages, and no second implementation of any of them. The request never leaves the
process: it is handed to the application object itself.

httpx's own ASGI transport collects a whole response before returning it, which would hold
back a job's Server-Sent Events until the job ended and a large batch's results in memory;
so the exchange here is a small ASGI bridge that hands the response on as it is produced.
httpx only encodes the request (JSON, forms, multipart uploads).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message

log = logging.getLogger(__name__)

QUEUE_DEPTH = 16  # response chunks buffered between the API route and the console's reader
PASSED_ON_HEADERS = ("content-type", "content-disposition", "cache-control", "x-accel-buffering")


class ApiProblem(Exception):
    """The API answered an error: its status and its `{"error": {...}}` body's fields."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error.get("message") or f"HTTP {status}")
        self.status = status
        self.message = str(error.get("message") or f"HTTP {status}")
        self.param: str | None = error.get("param")
        self.code: str | None = error.get("code")

    @property
    def route_missing(self) -> bool:
        """A 404 from the router itself (no such route on this server), not from a route."""
        return self.status in (404, 405) and self.code is None


@dataclass
class Reply:
    """An API response whose body is read as it comes."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: AsyncIterator[bytes]

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == wanted), None)

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks])

    async def problem(self) -> ApiProblem:
        body = await self.read()
        try:
            error = json.loads(body).get("error") or {}
        except (ValueError, AttributeError):
            error = {"message": body.decode(errors="replace")[:500] or f"HTTP {self.status}"}
        return ApiProblem(self.status, error if isinstance(error, dict) else {"message": str(error)})


class InternalApi:
    """Calls to this application's JSON API, authenticated as one key."""

    def __init__(self, app: ASGIApp, secret: str, outer: Request) -> None:
        self.app = app
        self.secret = secret
        # Answers that carry URLs (a job's `url`) should name the host the browser used.
        self.host = outer.headers.get("host", "llmqueue.internal")
        self.scheme = outer.url.scheme

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._json("GET", path, params=params)

    async def post(self, path: str, **body: Any) -> Any:
        """`json=`, or `data=` and `files=` for a form, as httpx takes them."""
        return await self._json("POST", path, **body)

    async def put(self, path: str, **body: Any) -> Any:
        return await self._json("PUT", path, **body)

    async def stream(self, path: str, params: dict[str, Any] | None = None) -> StreamingResponse:
        """A GET whose answer (events, a download) goes on to the browser as it is produced."""
        reply = await self.send("GET", path, params=params)
        if reply.status >= 400:
            raise await reply.problem()
        headers = {name: value for name in PASSED_ON_HEADERS if (value := reply.header(name)) is not None}
        return StreamingResponse(reply.chunks, status_code=reply.status, headers=headers)

    async def _json(self, method: str, path: str, **options: Any) -> Any:
        reply = await self.send(method, path, **options)
        if reply.status >= 400:
            raise await reply.problem()
        return json.loads(await reply.read())

    async def send(self, method: str, path: str, **options: Any) -> Reply:
        """One exchange; the reply's body is read lazily (and the route cancelled if it is not)."""
        request = httpx.Request(method, f"{self.scheme}://{self.host}{path}", **options)
        body = request.read()  # uploads are encoded in memory: the console's are a user's files
        headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in request.headers.items()]
        headers.append((b"authorization", f"Bearer {self.secret}".encode()))
        scope: dict[str, Any] = {
            "type": "http",
            # 2.3: Starlette's streaming responses then watch for the disconnect this bridge
            # sends when the console's reader goes away, and stop.
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": self.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?", 1)[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 0),
            "server": (request.url.host, request.url.port or (443 if self.scheme == "https" else 80)),
            "state": {},
        }
        return await _exchange(self.app, scope, body)


async def _exchange(app: ASGIApp, scope: dict[str, Any], body: bytes) -> Reply:
    out: asyncio.Queue[Message] = asyncio.Queue(QUEUE_DEPTH)
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await out.put(message)

    task: asyncio.Task[None] = asyncio.ensure_future(app(scope, receive, send))
    task.add_done_callback(_log_failure)
    start = await _next(out, task)
    if start is None or start["type"] != "http.response.start":
        raise RuntimeError(f"the API route ended without answering {scope['method']} {scope['path']}")

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                message = await _next(out, task)
                if message is None:
                    return
                if message["type"] == "http.response.body":
                    yield message.get("body", b"")
                    if not message.get("more_body", False):
                        return
        finally:  # the reader is done or gone: tell the route, and stop it if it goes on
            gone.set()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    return Reply(start["status"], list(start.get("headers", [])), chunks())


async def _next(out: asyncio.Queue[Message], task: asyncio.Task[None]) -> Message | None:
    """The route's next message, or None once it has ended without another."""
    if not out.empty() or not task.done():
        getter = asyncio.ensure_future(out.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
    return out.get_nowait() if not out.empty() else None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("console: an API route failed", exc_info=task.exception())
