"""Request dependencies: a database session per request and the caller's API key.

The key is read from `Authorization: Bearer <key>` through `api.openapi.bearer`, so every
route that needs a key declares the bearer security scheme in the OpenAPI document; the
checks and their 401 answers are here."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from api.errors import ApiError
from api.openapi import bearer
from jobstore.db import session_factory
from jobstore.jobs import find_api_key, hash_secret
from jobstore.models import ApiKey

# Valid keys only, by digest, for up to 30 s (a revoked key lapses within that) and at most
# _KEY_CACHE_MAX of them, least recently used out first.
_KEY_CACHE_S = 30.0
_KEY_CACHE_MAX = 10_000
_key_cache: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
_key_cache_lock = threading.Lock()  # sync dependencies run on a thread pool


def get_session() -> Iterator[Session]:
    session = session_factory()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def current_key(
    session: SessionDep,
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
) -> ApiKey:
    """The API key in `Authorization: Bearer <key>`, or a 401 saying what is missing.

    The header is read whole, not through `bearer`'s parse, which cannot tell a missing
    header from a malformed one."""
    authorization = request.headers.get("authorization")
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
    digest = hash_secret(secret.strip())
    with _key_cache_lock:
        cached = _key_cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < _KEY_CACHE_S:
            _key_cache.move_to_end(digest)
            return cached[1]
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
