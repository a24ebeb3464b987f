"""OpenAI's embeddings wire format, as the emulator speaks it.

Served at `/openai/v1/embeddings`, `/ollama/v1/embeddings` and `/compatible/v1/embeddings`, and at
Azure's deployment path `/azure/openai/deployments/{deployment}/embeddings` (with `api-version`).
`input` is a string, a list of strings, a token array (a list of integers) or a list of token
arrays, at most 2048 of them; `dimensions` shortens the vectors (text-embedding-3 models only);
`encoding_format` is `float` or `base64` (little-endian float32s, which the SDK asks for unless
told otherwise and decodes itself). Usage is `prompt_tokens` and `total_tokens`. Errors and
rate-limit headers are the chat routes' (`openai_format`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from emulator import embeddings
from emulator.core import Emulator, Fault, count_tokens
from emulator.openai_format import error_response, rate_headers

# OpenAI's answer to an `input` it cannot take: empty, too many items, or not strings/tokens.
INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."
)


class BadRequest(Exception):
    pass


def parse_input(value: Any) -> tuple[list[str], int]:
    """The texts to embed (a token array becomes its tokens as words) and their input tokens."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]  # one token array
    elif isinstance(value, list):
        items = value
    else:
        raise BadRequest(INVALID_INPUT)
    if not items or len(items) > embeddings.MAX_INPUTS["openai"]:
        raise BadRequest(INVALID_INPUT)
    texts: list[str] = []
    tokens = 0
    for item in items:
        if isinstance(item, str) and item:
            texts.append(item)
            tokens += count_tokens(item)
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            texts.append(" ".join(str(t) for t in item))
            tokens += len(item)
        else:
            raise BadRequest(INVALID_INPUT)
    return texts, tokens


def dimensions(body: dict[str, Any], model: str) -> int:
    native = embeddings.dimensions_for(model)
    wanted = body.get("dimensions")
    if wanted is None:
        return native
    if "ada-002" in model:
        raise BadRequest("This model does not support specifying dimensions.")
    if not isinstance(wanted, int) or isinstance(wanted, bool) or not 1 <= wanted <= native:
        raise BadRequest(f"Invalid value for 'dimensions' = {wanted}. Must be between 1 and {native}.")
    return wanted


def embeddings_body(texts: list[str], dims: int, encoding: str, model: str, tokens: int) -> dict[str, Any]:
    data = []
    for index, text in enumerate(texts):
        vector = embeddings.embed(text, dims)
        value: list[float] | str = embeddings.float32_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def handle(request: web.Request, provider: str, model: str | None = None) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(Fault(400, "invalid_json", "request body is not valid JSON"))
        model = model or body.get("model")
        if not model:
            return error_response(Fault(400, "missing_model", "you must provide a model parameter"))
        encoding = body.get("encoding_format") or "float"
        try:
            if encoding not in ("float", "base64"):
                raise BadRequest(
                    f"Invalid value for 'encoding_format' = {encoding}. Use 'float' or 'base64'."
                )
            texts, tokens = parse_input(body.get("input"))
            dims = dimensions(body, model)
        except BadRequest as exc:
            return error_response(Fault(400, "invalid_request_error", str(exc)))
        async with emu.call(provider, model, tokens=tokens, inputs=len(texts)) as call:
            headers = rate_headers(call)
            if call.fault is not None:
                return error_response(call.fault, headers)
            headers["x-request-id"] = f"req_emu_embed_{len(emu.calls)}"
            return web.json_response(embeddings_body(texts, dims, encoding, model, tokens), headers=headers)

    async def openai_embeddings(request: web.Request) -> web.StreamResponse:
        return await handle(request, request.match_info["provider"])

    async def azure_embeddings(request: web.Request) -> web.StreamResponse:
        if "api-version" not in request.query:
            return error_response(
                Fault(404, "404", "Resource not found: api-version query parameter missing")
            )
        return await handle(request, "azure", request.match_info["deployment"])

    app.router.add_post("/{provider:openai|ollama|compatible}/v1/embeddings", openai_embeddings)
    app.router.add_post("/azure/openai/deployments/{deployment}/embeddings", azure_embeddings)
