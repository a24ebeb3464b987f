"""Mistral's embeddings wire format, as the emulator speaks it.

Served at `/mistral/v1/embeddings`, where `Mistral.embeddings.create` posts. Requests carry
`model` and `input` (a string or a list of strings), optionally `output_dimension` (not for
mistral-embed, whose vectors are always 1024 long), `output_dtype` (float only here) and
`encoding_format` (`float` or `base64`). A call takes at most 256 inputs and 16384 tokens in all;
past either, Mistral's 400 `invalid_request_prompt` with code 3210 ("... split into more
batches."). Answers look like OpenAI's, with `completion_tokens: 0` in the usage. Other errors
and the rate-limit headers are the chat route's (`mistral_format`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from emulator import embeddings
from emulator.core import Emulator, Fault
from emulator.mistral_format import error_response, rate_headers, response_headers


class TooLarge(Exception):
    """A call past Mistral's per-call size limits, refused as Mistral refuses it."""


class Invalid(Exception):
    """A malformed request (Mistral answers these with a 422)."""


def batch_refused(message: str) -> web.Response:
    body = {"object": "error", "message": message, "type": "invalid_request_prompt", "param": None}
    body["code"] = "3210"
    return web.json_response(body, status=400, headers={"mistral-correlation-id": str(uuid.uuid4())})


def parse_embed(body: dict[str, Any]) -> tuple[str, list[str], int, str]:
    """The model, texts, dimensions and encoding of a valid request."""
    model, value = body.get("model"), body.get("input")
    if not model or not value:
        raise Invalid("model and input are required")
    model = str(model)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) and t for t in texts):
        raise Invalid("input must be a non-empty string or a list of non-empty strings")
    if len(texts) > embeddings.MAX_INPUTS["mistral"]:
        raise TooLarge("Too many inputs in request, split into more batches.")
    if embeddings.input_tokens(texts) > embeddings.MISTRAL_MAX_TOKENS:
        raise TooLarge("Too many tokens overall, split into more batches.")
    dims = embeddings.dimensions_for(model)
    wanted = body.get("output_dimension")
    if wanted is not None:
        if model.startswith("mistral-embed"):
            raise Invalid(f"output_dimension is not supported by {model}")
        if not isinstance(wanted, int) or not 1 <= wanted <= dims:
            raise Invalid(f"output_dimension must be between 1 and {dims}")
        dims = wanted
    if (body.get("output_dtype") or "float") != "float":
        raise Invalid("the emulator returns float embeddings only")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise Invalid("encoding_format must be 'float' or 'base64'")
    return model, texts, dims, encoding


def embeddings_body(model: str, texts: list[str], dims: int, encoding: str, tokens: int) -> dict[str, Any]:
    data = []
    for index, text in enumerate(texts):
        vector = embeddings.embed(text, dims)
        value: list[float] | str = embeddings.float32_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "embedding": value, "index": index})
    return {
        "id": uuid.uuid4().hex,
        "object": "list",
        "model": model,
        "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
        "data": data,
    }


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def create(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return error_response(Fault(401, "invalid_api_key", "Unauthorized"))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(Fault(400, "invalid_json", "Invalid JSON body"))
        try:
            model, texts, dims, encoding = parse_embed(body)
        except TooLarge as exc:
            return batch_refused(str(exc))
        except Invalid as exc:
            return error_response(Fault(422, "invalid_request_error", str(exc)))
        tokens = embeddings.input_tokens(texts)
        async with emu.call("mistral", model, tokens=tokens, inputs=len(texts)) as call:
            if call.fault is not None:
                return error_response(call.fault, rate_headers(call))
            answer = embeddings_body(model, texts, dims, encoding, tokens)
            return web.json_response(answer, headers=response_headers(call))

    app.router.add_post("/mistral/v1/embeddings", create)
