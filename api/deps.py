"""Request dependencies: a database session per request and the caller's API key."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from api.errors import ApiError
from jobstore.db import session_factory
from jobstore.jobs import find_api_key, hash_secret
from jobstore.models import ApiKey

_KEY_CACHE_S = 30.0
_key_cache: dict[str, tuple[float, ApiKey]] = {}


def get_session() -> Iterator[Session]:
    session = session_factory()()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def current_key(session: SessionDep, authorization: Annotated[str | None, Header()] = None) -> ApiKey:
    """The API key in `Authorization: Bearer <key>`, or a 401 saying what is missing."""
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
    cached = _key_cache.get(digest)
    if cached is not None and time.monotonic() - cached[0] < _KEY_CACHE_S:
        return cached[1]
    key = find_api_key(session, secret.strip())
    if key is None:
        raise ApiError(401, "invalid API key", param="Authorization", code="invalid_api_key")
    session.expunge(key)
    _key_cache[digest] = (time.monotonic(), key)
    return key


OwnerDep = Annotated[ApiKey, Depends(current_key)]
