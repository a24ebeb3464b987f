"""Gemini's embedding methods (the Gemini Developer API), as the emulator speaks them.

`google-genai`'s `models.embed_content` always posts `:batchEmbedContents` to the Developer API,
one request per content: `/gemini/{version}/models/{model}:batchEmbedContents` with
`{"requests": [{"model", "content": {"parts": [{"text"}]}, "taskType", "outputDimensionality"}]}`,
at most 100 requests; the answer is `{"embeddings": [{"values": [...]}]}` in request order.
`:embedContent` (one content, answered with `{"embedding": {"values"}}`) is served too, for
clients that call the REST method directly. Errors are the generate routes' (`gemini_format`).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from emulator import embeddings
from emulator.core import Emulator
from emulator.gemini_format import error_body, error_response, field_of, unauthenticated

TASK_TYPES = (
    "TASK_TYPE_UNSPECIFIED",
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
)


class BadRequest(Exception):
    pass


def _text(content: Any) -> str:
    parts = (content or {}).get("parts") or []
    if any("text" not in part for part in parts):
        raise BadRequest("* the emulator embeds text parts only")
    return "\n".join(str(part["text"]) for part in parts)


def parse_request(request: dict[str, Any], where: str, model: str) -> tuple[str, int]:
    """One embedding request's text and dimensions; `where` names it in error messages."""
    text = _text(request.get("content"))
    if not text:
        raise BadRequest(f"* {where}.content: contents is not specified")
    task = field_of(request, "taskType")
    if task is not None and task not in TASK_TYPES:
        raise BadRequest(f"Invalid value at '{where}.task_type', \"{task}\"")
    native = embeddings.dimensions_for(model)
    wanted = field_of(request, "outputDimensionality")
    if wanted is None:
        return text, native
    if not isinstance(wanted, int) or not 1 <= wanted <= native:
        raise BadRequest(f"* {where}.output_dimensionality: must be between 1 and {native}")
    return text, wanted


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def handle(request: web.Request) -> web.StreamResponse:
        model, action = request.match_info["model"], request.match_info["action"]
        refused = unauthenticated(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response(error_body(400, "Invalid JSON payload received."), status=400)
        try:
            if action == "batchEmbedContents":
                requests = body.get("requests") or []
                if not requests:
                    raise BadRequest("* BatchEmbedContentsRequest.requests: requests is not specified")
                if len(requests) > embeddings.MAX_INPUTS["gemini"]:
                    limit = embeddings.MAX_INPUTS["gemini"]
                    raise BadRequest(
                        f"* BatchEmbedContentsRequest.requests: at most {limit} requests can be in one batch"
                    )
                items = [parse_request(r, f"requests[{i}]", model) for i, r in enumerate(requests)]
            else:
                items = [parse_request(body, "EmbedContentRequest", model)]
        except BadRequest as exc:
            return web.json_response(error_body(400, str(exc)), status=400)
        texts = [text for text, _ in items]
        async with emu.call(
            "gemini", model, tokens=embeddings.input_tokens(texts), inputs=len(items)
        ) as call:
            if call.fault is not None:
                return error_response(call.fault)
            vectors = [{"values": embeddings.embed(text, dims)} for text, dims in items]
            if action == "embedContent":
                return web.json_response({"embedding": vectors[0]})
            return web.json_response({"embeddings": vectors})

    app.router.add_post("/gemini/{version}/models/{model}:{action:batchEmbedContents|embedContent}", handle)
