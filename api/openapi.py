"""The OpenAPI document that /docs and client generators read, customised here and only here.

- `bearer`: the HTTP bearer security scheme, declared once. `api/deps.py` depends on it, so
  every route that needs an API key declares it (and /docs has an Authorize button); the
  key checks and their error answers stay in `api/deps.py`.
- `ErrorResponse`: the one error shape (`api/errors.py`), documented as every error answer:
  the 401 of each secured route, each 4xx a route lists, and the 422 that FastAPI would
  describe as its own `HTTPValidationError` (our handler answers validation errors in the
  error shape, not FastAPI's).
- `json_body(model)`: the documented body of a route that reads its body itself, and
  `schema_ref(model)` for any other schema a route names by hand.
- `streamed(...)`: the documented 2xx content of a streamed answer (SSE, JSONL, CSV, bytes).
- `install_openapi(app)`: the document, built once with all of the above applied.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

SCHEMAS = "#/components/schemas/"
SCHEME_NAME = "bearerAuth"

bearer = HTTPBearer(
    scheme_name=SCHEME_NAME,
    bearerFormat="llmqueue API key",
    description="An llmqueue API key, sent as `Authorization: Bearer <key>`. Create one with "
    "`llmqueue keys create`; only its hash is stored.",
    auto_error=False,  # api/deps.py answers a missing or malformed key in the one error shape
)


class ErrorParam(BaseModel):
    param: str = Field(description="Where: a dotted path into the body, a query parameter or a header.")
    message: str


class ErrorDetail(BaseModel):
    message: str = Field(description="What is wrong and, where it helps, how to fix it.")
    type: str = Field(
        description="OpenAI's error type: invalid_request_error, authentication_error, "
        "permission_error, not_found_error, conflict_error, rate_limit_error or api_error."
    )
    param: str | None = Field(description="The parameter at fault, when one is.")
    code: str | None = Field(description="A stable machine-readable code, e.g. missing_api_key.")
    details: list[ErrorParam] | None = Field(
        default=None, description="Every invalid parameter, when a request has several."
    )


class ErrorResponse(BaseModel):
    """Every error answer: OpenAI's shape, so OpenAI SDKs raise their typed errors."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "message": "max_tokens: Input should be greater than or equal to 1",
                        "type": "invalid_request_error",
                        "param": "max_tokens",
                        "code": "invalid_value",
                    }
                }
            ]
        }
    )
    error: ErrorDetail


# Models that routes name by hand (`schema_ref`), added to the components when the document
# is built: FastAPI adds only those it sees in signatures and `responses`.
_NAMED_MODELS: list[type[BaseModel]] = []


def schema_ref(model: type[BaseModel]) -> dict[str, Any]:
    """A reference to `model`'s schema, which the document will hold."""
    _NAMED_MODELS.append(model)
    return {"$ref": SCHEMAS + model.__name__}


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON body of a route that parses its body
    itself (so FastAPI cannot see it): the route's parsing is unchanged."""
    schema = schema_ref(model)
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def streamed(media_type: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """2xx `content` for a streamed answer; without `schema`, a text (or byte) stream."""
    fallback = {"type": "string", "format": "binary"} if "octet" in media_type else {"type": "string"}
    return {media_type: {"schema": schema or {**fallback, "description": description}}}


ERROR_CONTENT = {"application/json": {"schema": schema_ref(ErrorResponse)}}
UNAUTHORIZED = {
    "description": "Missing, malformed or unknown API key (codes missing_api_key, invalid_api_key).",
    "content": ERROR_CONTENT,
}
INVALID = "Invalid request: `param` names the field at fault, `details` lists every one."


def _schemas_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema and those it refers to, keyed by component name."""
    schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
    found = dict(schema.pop("$defs", {}))
    found[model.__name__] = schema
    return found


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _fix_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    if operation.get("security"):
        responses.setdefault("401", {**UNAUTHORIZED})
    for status, response in responses.items():
        if _is_fastapi_validation(response):
            response.update(description=INVALID, content={**ERROR_CONTENT})
        elif status[0] in "45" and not response.get("content"):
            response["content"] = {**ERROR_CONTENT}
        elif status.startswith("2"):
            content: dict[str, Any] = response.get("content", {})
            typed = {k: v for k, v in content.items() if v.get("schema")}
            if typed and len(typed) < len(content):  # FastAPI's schemaless JSON beside a stream
                response["content"] = typed


def _referenced(paths: dict[str, Any], name: str) -> bool:
    return f'"{SCHEMAS}{name}"' in json.dumps(paths)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = document.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    for model in _NAMED_MODELS:
        for name, schema in _schemas_of(model).items():
            schemas.setdefault(name, schema)
    for operations in document["paths"].values():
        for operation in operations.values():
            _fix_operation(operation)
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and not _referenced(document["paths"], name):
            del schemas[name]
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the customised document at /openapi.json (built on first request, then kept)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
