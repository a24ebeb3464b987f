"""Every API error in one JSON shape, OpenAI's, so OpenAI SDKs raise their typed errors:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": "..."}}

`param` says where the problem is (a dotted path into the body, or a header name).

Nothing answers outside this shape: a job store that is away or too slow (a refused
connection, a statement or pool timeout) is a 503 with `Retry-After`, and any other
unexpected exception a 500 whose message carries a reference to the logged traceback
(`unexpected_response`, also used by the request guard in `api/guard.py`).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.settings import get_settings

log = logging.getLogger(__name__)
UNAVAILABLE_LOG_EVERY_S = 5.0

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}

# Postgres refused, dropped or timed out (connect, statement, or waiting for a pooled
# connection): the request may succeed in a few seconds.
DATABASE_AWAY: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeoutError)
# Redis (the broker, shared state) refused or timed out.
REDIS_AWAY: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)


class BodyTooLarge(StarletteHTTPException):
    """A request body past its limit, raised while it is read (an HTTPException, so FastAPI's
    body reading passes it on as it is instead of calling it a parse error)."""

    def __init__(self, message: str, *, param: str = "body", code: str = "body_too_large") -> None:
        super().__init__(413, message)
        self.message = message
        self.param = param
        self.code = code


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.details = details
        self.headers = headers or {}


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None, details: Any = None
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error"),
        "param": param,
        "code": code,
    }
    if details is not None:
        error["details"] = details
    return {"error": error}


def _location(loc: tuple[Any, ...]) -> str:
    if len(loc) == 2 and loc[0] == "header":  # a header by its usual spelling: Idempotency-Key
        return "-".join(word.capitalize() for word in str(loc[1]).split("-"))
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def too_large_response(exc: BodyTooLarge) -> JSONResponse:
    return JSONResponse(
        error_body(413, exc.message, exc.param, exc.code),
        status_code=413,
        headers={"Connection": "close"},  # the rest of the body is not read
    )


def unavailable_response(exc: BaseException) -> JSONResponse:
    """503: the job store (or Redis) is away or too slow; retry after a few seconds."""
    retry_after = get_settings().db_retry_after_s
    if isinstance(exc, REDIS_AWAY):
        what, code = "the broker or shared state (Redis)", "redis_unavailable"
    else:
        what, code = "the job store (Postgres)", "database_unavailable"
    _log_unavailable(what, exc)
    message = (
        f"{what} is unavailable or too slow right now; retry in {retry_after} s "
        "(send the same Idempotency-Key on creating routes to be sure nothing is made twice)"
    )
    return JSONResponse(
        error_body(503, message, None, code),
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


_unavailable_logged = [0.0, 0]  # when the last line was logged, 503s answered since


def _log_unavailable(what: str, exc: BaseException) -> None:
    """One line every few seconds while an outage lasts, not one per request."""
    _unavailable_logged[1] += 1
    if time.monotonic() - _unavailable_logged[0] >= UNAVAILABLE_LOG_EVERY_S:
        log.warning("answering 503 (%d so far): %s is unavailable: %r", _unavailable_logged[1], what, exc)
        _unavailable_logged[0] = time.monotonic()


def unexpected_response(exc: BaseException) -> JSONResponse:
    """500 for an exception nobody expected: logged with a reference the answer carries."""
    if isinstance(exc, DATABASE_AWAY + REDIS_AWAY):
        return unavailable_response(exc)
    if isinstance(exc, BodyTooLarge):
        return too_large_response(exc)
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected %s (reference %s)", type(exc).__name__, reference, exc_info=exc)
    return JSONResponse(
        error_body(500, f"internal error (reference {reference}), logged", None, "internal_error"),
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer", **exc.headers} if exc.status == 401 else exc.headers
        return JSONResponse(
            error_body(exc.status, exc.message, exc.param, exc.code, exc.details),
            status_code=exc.status,
            headers=headers or None,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": ("body",), "msg": "invalid request"}
        where = _location(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            ctx: dict[str, Any] = first.get("ctx") or {}
            message = f"the request body is not valid JSON: {ctx.get('error', first['msg'])}"
            code = "invalid_json"
        else:
            message = f"{where}: {first['msg']}"
            code = "invalid_value"
        details = [{"param": _location(tuple(e.get("loc", ()))), "message": e["msg"]} for e in errors]
        return JSONResponse(
            error_body(422 if code != "invalid_json" else 400, message, where, code, details),
            status_code=422 if code != "invalid_json" else 400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyTooLarge):
            return too_large_response(exc)
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    for away in DATABASE_AWAY + REDIS_AWAY:

        @app.exception_handler(away)
        async def _away(_: Request, exc: Exception) -> JSONResponse:
            return unavailable_response(exc)
