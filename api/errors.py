"""Every API error in one JSON shape, OpenAI's, so OpenAI SDKs raise their typed errors:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens", "code": "..."}}

`param` says where the problem is (a dotted path into the body, or a header name).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


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
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code)
