"""AWS Bedrock Runtime's InvokeModel for the embedding models, as the emulator speaks it.

Served at `/bedrock/model/{modelId}/invoke`, the path boto3's `invoke_model` builds from
`endpoint_url`; the body is the model's own JSON:

- Titan Text Embeddings (`amazon.titan-embed-text-v2:0`, `-v1`): one `inputText` string per call,
  `dimensions` 256, 512 or 1024 (v2; 1024 by default), `normalize` (default true) and
  `embeddingTypes` (float, binary); the answer is `embedding`, `embeddingsByType` and
  `inputTextTokenCount`.
- Cohere Embed (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`): `texts` (at most 96),
  `input_type` (required), `truncate`, `embedding_types`; the answer is `embeddings` (a list of
  float vectors, `embeddings_floats`, or by type when `embedding_types` is given), `id`, `texts`.

A malformed body gets Bedrock's 400 ValidationException "Malformed input request: ...". Errors
are rendered as Converse's (`bedrock_format`); Bedrock sends no rate-limit headers.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from aiohttp import web

from emulator import embeddings
from emulator.bedrock_format import error_response, unauthenticated
from emulator.core import Emulator, Fault

TITAN_V2_DIMENSIONS = (256, 512, 1024)
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")


class Malformed(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(f"Malformed input request: {detail}, please reformat your input and try again.")


def _kind(type_: object) -> str:
    names = {str: "String", list: "JSONArray", dict: "JSONObject", int: "Integer", bool: "Boolean"}
    return names.get(type(type_), "Null")


def titan(body: dict[str, Any], model: str) -> tuple[list[str], dict[str, Any]]:
    """The texts a Titan body embeds (always one) and how to render its answer."""
    text = body.get("inputText")
    if text is None:
        raise Malformed("#: required key [inputText] not found")
    if not isinstance(text, str):
        # Titan takes one text per call: a list of them is refused like any other wrong type.
        raise Malformed(f"#/inputText: expected type: String, found: {_kind(text)}")
    dims = embeddings.dimensions_for(model)
    if "v2" in model:
        dims = body.get("dimensions", 1024)
        if dims not in TITAN_V2_DIMENSIONS:
            raise Malformed(f"#/dimensions: {dims} is not a valid enum value")
    kinds = body.get("embeddingTypes") or ["float"]
    if any(k not in ("float", "binary") for k in kinds):
        raise Malformed(f"#/embeddingTypes: {kinds} is not a valid enum value")
    return [text], {"dims": dims, "normalize": body.get("normalize", True), "kinds": kinds}


def titan_body(text: str, dims: int, normalize: bool, kinds: list[str]) -> dict[str, Any]:
    if normalize:
        vector = embeddings.embed(text, dims)
    else:
        vector = embeddings.as_float32(embeddings.raw_vector(text, dims))
    by_type: dict[str, Any] = {}
    if "float" in kinds:
        by_type["float"] = vector
    if "binary" in kinds:
        by_type["binary"] = [1 if v > 0 else 0 for v in vector]
    answer: dict[str, Any] = {
        "embeddingsByType": by_type,
        "inputTextTokenCount": embeddings.input_tokens([text]),
    }
    if "float" in kinds:
        answer["embedding"] = vector
    return answer


def cohere(body: dict[str, Any], model: str) -> tuple[list[str], dict[str, Any]]:
    """The texts a Cohere Embed body embeds and how to render its answer."""
    texts = body.get("texts")
    if texts is None:
        raise Malformed("#: required key [texts] not found")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise Malformed(f"#/texts: expected type: JSONArray of String, found: {_kind(texts)}")
    limit = embeddings.MAX_INPUTS["bedrock-cohere"]
    if not texts or len(texts) > limit:
        bound = "minimum item count: 1" if not texts else f"maximum item count: {limit}"
        raise Malformed(f"#/texts: expected {bound}, found: {len(texts)}")
    input_type = body.get("input_type")
    if input_type is None:
        raise Malformed("#: required key [input_type] not found")
    if input_type not in COHERE_INPUT_TYPES:
        raise Malformed(f"#/input_type: {input_type} is not a valid enum value")
    kinds = body.get("embedding_types")
    if kinds is not None and any(k not in embeddings.ENCODINGS for k in kinds):
        raise Malformed(f"#/embedding_types: {kinds} is not a valid enum value")
    return texts, {"dims": embeddings.dimensions_for(model), "kinds": kinds}


def cohere_body(texts: list[str], dims: int, kinds: list[str] | None) -> dict[str, Any]:
    vectors = [embeddings.embed(text, dims) for text in texts]
    answer: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": texts}
    if kinds is None:
        answer.update(embeddings=vectors, response_type="embeddings_floats")
    else:
        by_type = {kind: [embeddings.encode(v, kind) for v in vectors] for kind in kinds}
        answer.update(embeddings=by_type, response_type="embeddings_by_type")
    return answer


def add_routes(app: web.Application, emu: Emulator) -> None:
    async def invoke(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        refused = unauthenticated(request)
        if refused is not None:
            return refused
        family = embeddings.base_model(model).split("-v")[0]
        if family not in ("amazon.titan-embed-text", "cohere.embed-english", "cohere.embed-multilingual"):
            message = f"The emulator serves InvokeModel for embedding models only, not {model}."
            return error_response(Fault(400, "invalid_request", message))
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error_response(
                Fault(
                    400, "invalid_json", "Malformed input request, please reformat your input and try again."
                )
            )
        try:
            texts, spec = titan(body, model) if family.startswith("amazon.") else cohere(body, model)
        except Malformed as exc:
            return error_response(Fault(400, "invalid_request", str(exc)))
        tokens = embeddings.input_tokens(texts)
        async with emu.call("bedrock", model, tokens=tokens, inputs=len(texts)) as call:
            if call.fault is not None:
                return error_response(call.fault)
            if family.startswith("amazon."):
                answer = titan_body(texts[0], spec["dims"], spec["normalize"], spec["kinds"])
            else:
                answer = cohere_body(texts, spec["dims"], spec["kinds"])
            headers = {
                "x-amzn-RequestId": str(uuid.uuid4()),
                "X-Amzn-Bedrock-Input-Token-Count": str(tokens),
                "X-Amzn-Bedrock-Invocation-Latency": str(math.ceil(call.scope.latency_ms)),
            }
            return web.json_response(answer, headers=headers)

    app.router.add_post("/bedrock/model/{model}/invoke", invoke)
