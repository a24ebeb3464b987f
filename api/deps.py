"""Request dependencies: a database session per request, the caller's API key, and the
admin check.

A key is looked up by its secret's digest and cached in each API process for KEY_CACHE_S
seconds, so a revoked key (or a changed role) takes effect in every process within that,
with no message between processes to lose. Two seconds keep it well inside the promised
five while costing one indexed lookup per key per process every two seconds, nothing
beside a request's own queries. (Invalidation over Redis pub/sub would still need this TTL
for a missed message, and would add a subscriber thread per process for a second gained.)

The key is read from `Authorization: Bearer <key>` through `api.openapi.bearer`, so every
route that needs a key declares the bearer security scheme in the OpenAPI document.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.openapi import bearer
from jobstore.db import session_factory
from jobstore.jobs import find_api_key, hash_secret
from jobstore.models import ApiKey, KeyRole

# Valid keys only, by digest, for up to KEY_CACHE_S (a revoked key lapses within that) and
# at most _KEY_CACHE_MAX of them, least recently used out first.
KEY_CACHE_S = 2.0
_KEY_CACHE_MAX = 10_000
_key_cache: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
_key_cache_lock = threading.Lock()  # sync dependencies run on a thread pool


async def get_session() -> AsyncIterator[Session]:
    """A session for the request. Made on the event loop (making one does no I/O: it connects
    at its first statement, on the route's thread), so a request pays no thread hop for it;
    closed there too unless a transaction is still open (its rollback is a round trip). The
    close is shielded: a client that goes away cancels the request, and a close cancelled
    half-way would leave the connection idle in its transaction until garbage collection."""
    session = session_factory()()
    try:
        yield session
    finally:
        if session.in_transaction():
            await asyncio.shield(run_in_threadpool(session.close))
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]
# For a route that answers with a stream: the session is closed when the route function
# returns, not when the response ends (a dependency's default), so a slow or stalled download
# holds no database connection in an open transaction; the stream reads with its own sessions.
StreamSessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def current_key(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> ApiKey:
    """The API key in `Authorization: Bearer <key>`, or a 401 saying what is missing.

    The header is read whole, not through `bearer`'s parse, which cannot tell a missing
    header from a malformed one. A key in the cache costs no thread hop; a lookup runs on
    the thread pool."""
    authorization = request.headers.get("authorization")
    cached = _cached_key(authorization)
    if cached is not None:
        return cached
    return await run_in_threadpool(key_for_authorization, authorization)


def _cached_key(authorization: str | None) -> ApiKey | None:
    scheme, _, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    digest = hash_secret(secret.strip())
    with _key_cache_lock:
        cached = _key_cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < KEY_CACHE_S:
            _key_cache.move_to_end(digest)
            return cached[1]
    return None


def key_for_authorization(authorization: str | None) -> ApiKey:
    """The key an `Authorization` header names (cached for KEY_CACHE_S), or the 401. A lookup
    uses a session of its own, returned at once: a long response (a stream) that depends on
    the key never holds a database connection for it."""
    if not authorization:
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>' (create one with 'llmqueue keys create')",
            param="Authorization",
            code="missing_api_key",
        )
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(
            401,
            "malformed Authorization header: expected 'Bearer <key>'",
            param="Authorization",
            code="invalid_api_key",
        )
    cached = _cached_key(authorization)
    if cached is not None:
        return cached
    digest = hash_secret(secret.strip())
    with session_factory()() as session:
        key = find_api_key(session, secret.strip())
        if key is None:
            raise ApiError(401, "invalid API key", param="Authorization", code="invalid_api_key")
        session.expunge(key)
    with _key_cache_lock:
        _key_cache[digest] = (time.monotonic(), key)
        _key_cache.move_to_end(digest)
        while len(_key_cache) > _KEY_CACHE_MAX:
            _key_cache.popitem(last=False)
    return key


OwnerDep = Annotated[ApiKey, Depends(current_key)]


async def admin_key(owner: OwnerDep) -> ApiKey:
    """The caller's key when it is an admin key, else a 403 saying so."""
    if owner.role != KeyRole.ADMIN.value:
        raise ApiError(
            403,
            "this route needs an admin key; this key is a member "
            "(an admin makes one with 'llmqueue keys create --admin' or POST /v1/keys)",
            param="Authorization",
            code="admin_required",
        )
    return owner


AdminDep = Annotated[ApiKey, Depends(admin_key)]


def is_admin(key: ApiKey) -> bool:
    return key.role == KeyRole.ADMIN.value
