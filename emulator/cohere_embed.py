"""Cohere's v2 Embed wire format, as the emulator speaks it.

Served at `/cohere/v2/embed`, where `ClientV2.embed` posts. Requests carry `model`, `texts` (or
`inputs` whose content items are text; at most 96 either way), `input_type` (required by the
v3 and newer models), `embedding_types` (float, int8, uint8, binary, ubinary, base64; float when
absent) and, for embed-v4.0 and newer, `output_dimension` (256, 512, 1024 or 1536). Answers are
`embeddings_by_type` with the texts and `meta.billed_units.input_tokens`. Errors are the chat
route's (`cohere_format`), with Cohere's "invalid request: ..." messages.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

from emulator import embeddings
from emulator.cohere_format import error_response, response_headers
from emulator.core import Emulator, Fault

INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
V4_DIMENSIONS = (256, 512, 1024, 1536)


class BadRequest(Exception):
    pass


def _is_v3_or_newer(model: str) -> bool:
    return "-v3" in model or "-v4" in model


def _texts(body: dict[str, Any]) -> list[str]:
    if body.get("images"):
        raise BadRequest("invalid request: the emulator embeds text only")
    texts = body.get("texts")
    if texts is None and body.get("inputs") is not None:
        texts = []
        for item in body["inputs"]:
            parts = item.get("content") or []
            if any(part.get("type") != "text" for part in parts):
                raise BadRequest("invalid request: the emulator embeds text only")
            texts.append(" ".join(str(part.get("text", "")) for part in parts))
    if not texts:
        raise BadRequest("invalid request: one of texts, images or inputs must be specified")
    limit = embeddings.MAX_INPUTS["cohere"]
    if len(texts) > limit:
        raise BadRequest(
            f"invalid request: total number of texts must be at most {limit} - received {len(texts)}"
        )
    return [str(t) for t in texts]


def parse_embed(body: dict[str, Any]) -> tuple[str, list[str], int, list[str]]:
    """The model, texts, dimensions and embedding types of a valid request."""
    model = body.get("model")
    if not model:
        raise BadRequest("invalid request: model must be specified")
    model = str(model)
    texts = _texts(body)
    input_type = body.get("input_type")
    if input_type is None and _is_v3_or_newer(model):
        raise BadRequest("invalid request: input_type is required for Embed v3 and newer models")
    if input_type is not None and input_type not in INPUT_TYPES:
        raise BadRequest(f"invalid request: input_type must be one of {', '.join(INPUT_TYPES)}")
    dims = embeddings.dimensions_for(model)
    wanted = body.get("output_dimension")
    if wanted is not None:
        if "-v4" not in model:
            raise BadRequest(f"invalid request: output_dimension is not supported for model {model}")
        if wanted not in V4_DIMENSIONS:
            raise BadRequest(
                f"invalid request: output_dimension must be one of {', '.join(map(str, V4_DIMENSIONS))}"
            )
        dims = int(wanted)
    kinds = body.get("embedding_types") or ["float"]
    unknown = [k for k in kinds if k not in embeddings.ENCODINGS]
    if unknown:
        raise BadRequest(f"invalid request: invalid embedding type {unknown[0]!r}")
    return model, texts, dims, list(kinds)


def embed_body(texts: list[str], dims: int, kinds: list[str], tokens: int) -> dict[str, Any]:
    vectors = [embeddings.embed(text, dims) for text in texts]
    return {
        "id": str(uuid.uuid4()),
        "embeddings": {kind: [embeddings.encode(v, kind) for v in vectors] for kind in kinds},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    }


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def embed(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return error_response(Fault(401, "invalid_api_key", "no api key supplied"))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(
                Fault(400, "invalid_json", "invalid request: could not parse the JSON body")
            )
        try:
            model, texts, dims, kinds = parse_embed(body)
        except BadRequest as exc:
            return error_response(Fault(400, "invalid_request", str(exc)))
        tokens = embeddings.input_tokens(texts)
        async with emu.call("cohere", model, tokens=tokens, inputs=len(texts)) as call:
            if call.fault is not None:
                return error_response(call.fault, call)
            return web.json_response(embed_body(texts, dims, kinds, tokens), headers=response_headers(call))

    app.router.add_post("/cohere/v2/embed", embed)
