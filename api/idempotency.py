"""Idempotency-Key on every creating route, the way Stripe does it.

A client that retries a creating request with the same `Idempotency-Key` header gets the
first request's answer, its status and body, and nothing is created twice:

- scoped to the API key; a key used on another route, or with another body, is a 409
  `idempotency_conflict` (the body is fingerprinted whole: canonical JSON, or for a
  multipart upload every part's name, filename and content);
- looked up before the request is validated, so a replay answers as the first request did
  even when the budget, the catalog or the file it named changed since;
- answered from a record (`jobstore/idempotency.py`) written in the transaction that
  creates the resource, kept 24 hours;
- a concurrent duplicate waits on the record's primary key, loses, has its work rolled back,
  and answers with the first one's record.

A route takes the `idempotent(route)` dependency, and calls `save` on what it returns just
before it commits what it created. Only an answer that created something is recorded: a
request refused by validation records nothing, so it may be corrected and sent again with
the same key. A replay carries the header `Idempotent-Replayed: true`.

A chat completion records the job it made; its replay answers from that job (waiting for
it if it is still running), so a retry after a timeout gets the one answer of the one call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.deps import OwnerDep
from api.errors import ApiError, error_body
from core.clock import utcnow
from jobstore import idempotency
from jobstore.db import session_factory
from jobstore.models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
HASH_CHUNK = 1 << 20

# How a route answers a replay from its record when the stored body is not the answer itself
# (a chat completion renders its job).
Replay = Callable[[IdempotencyRecord, Request], Awaitable[Response]]


class IdempotentReplay(Exception):
    """Answer with this response instead of running the route (a replay, or a conflict)."""

    def __init__(self, response: Response) -> None:
        super().__init__("idempotent replay")
        self.response = response


class RaceLost(Exception):
    """A concurrent request with the same key committed first; answer with its record."""

    def __init__(self, request_key: Idempotency) -> None:
        super().__init__(f"Idempotency-Key {request_key.key!r} was used by a concurrent request")
        self.request_key = request_key


@dataclass(frozen=True)
class Idempotency:
    """This request's Idempotency-Key, what its body hashes to, and the route it came to."""

    owner_id: str
    key: str
    route: str
    fingerprint: str
    replay: Replay | None = None

    def save(
        self, session: Session, status_code: int, body: BaseModel | dict[str, Any], resource_id: str | None
    ) -> None:
        """Record the answer in the transaction creating `resource_id`, just before its commit.
        Raises RaceLost (the transaction rolled back) when a concurrent duplicate won."""
        response = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
        try:
            idempotency.save(
                session,
                owner_id=self.owner_id,
                key=self.key,
                route=self.route,
                fingerprint=self.fingerprint,
                status_code=status_code,
                response=response,
                resource_id=resource_id,
                now=utcnow(),
            )
        except idempotency.RaceLost:
            raise RaceLost(self) from None


async def request_fingerprint(route: str, request: Request) -> str:
    """sha256 of the route and the whole body: canonical JSON (key order and spacing do not
    matter), or a form's parts in order, files by their name, filename and content."""
    digest = hashlib.sha256(route.encode() + b"\n")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        parts: list[list[str | None]] = []
        for name, value in (await request.form()).multi_items():
            if isinstance(value, UploadFile):
                parts.append([name, value.filename, await _file_digest(value)])
            else:
                parts.append([name, None, value])
        digest.update(json.dumps(parts).encode())
        return digest.hexdigest()
    raw = await request.body()
    try:
        digest.update(json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode())
    except ValueError:
        digest.update(raw)
    return digest.hexdigest()


async def _file_digest(upload: UploadFile) -> str:
    digest = hashlib.sha256()
    await upload.seek(0)
    while block := await upload.read(HASH_CHUNK):
        digest.update(block)
    await upload.seek(0)  # the route reads it from the start
    return digest.hexdigest()


def _find(owner_id: str, key: str) -> IdempotencyRecord | None:
    with session_factory()() as session:
        record = idempotency.find(session, owner_id, key, utcnow())
        if record is not None:
            session.expunge(record)
        return record


def _conflict(message: str) -> Response:
    # OpenAI's SDKs retry a 409 unless told not to; sending the same body again cannot help.
    return JSONResponse(
        error_body(409, message, HEADER, "idempotency_conflict"),
        status_code=409,
        headers={"x-should-retry": "false"},
    )


async def answer(record: IdempotencyRecord, request_key: Idempotency, request: Request) -> Response:
    """The replay of `record` for this request: its answer, or a 409 when the key was used
    for another route or another body."""
    if record.route != request_key.route:
        return _conflict(
            f"Idempotency-Key {request_key.key!r} was used for {record.route} within the last 24 hours; "
            "use a new key for a new request"
        )
    if record.fingerprint != request_key.fingerprint:
        return _conflict(
            f"Idempotency-Key {request_key.key!r} was used with a different request body "
            f"(it made {record.resource_id or 'a resource'}); use a new key for a new request"
        )
    if request_key.replay is not None:
        response = await request_key.replay(record, request)
    else:
        response = JSONResponse(record.response, status_code=record.status_code)
    response.headers[REPLAYED_HEADER] = "true"
    return response


def idempotent(route: str, replay: Replay | None = None) -> Any:
    """The dependency a creating route takes: None without the header; with it, the request's
    Idempotency (to `save` before commit), or the replay of an earlier answer, raised."""

    async def check(
        request: Request,
        owner: OwnerDep,
        idempotency_key: Annotated[
            str | None,
            Header(
                max_length=MAX_KEY_LENGTH,
                description="Send the same value when retrying: the first answer is replayed for 24 hours.",
            ),
        ] = None,
    ) -> Idempotency | None:
        if idempotency_key is None:
            return None
        key = idempotency_key.strip()
        if not key:
            raise ApiError(400, f"{HEADER} is empty", param=HEADER, code="invalid_value")
        request_key = Idempotency(owner.id, key, route, await request_fingerprint(route, request), replay)
        record = await run_in_threadpool(_find, owner.id, key)
        if record is None:
            return request_key
        raise IdempotentReplay(await answer(record, request_key, request))

    return Depends(check)


def install_idempotency_handlers(app: FastAPI) -> None:
    @app.exception_handler(IdempotentReplay)
    async def _replay(_: Request, exc: IdempotentReplay) -> Response:
        return exc.response

    @app.exception_handler(RaceLost)
    async def _race_lost(request: Request, exc: RaceLost) -> Response:
        request_key = exc.request_key
        record = await run_in_threadpool(_find, request_key.owner_id, request_key.key)
        if record is None:  # the winner's record expired in between: practically never
            return _conflict(f"{HEADER} {request_key.key!r} was used by a concurrent request; retry")
        return await answer(record, request_key, request)
