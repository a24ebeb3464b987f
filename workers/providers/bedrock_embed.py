"""Bedrock's embedding models through InvokeModel: the translation `BedrockProvider.embed`
(bedrock.py) uses.

Embedding models on Bedrock speak their own JSON bodies, not Converse:

- Titan Text Embeddings (`amazon.titan-embed-text-v2:0`, `-v1`): one `inputText` per call
  (`BEDROCK_MAX_INPUTS["titan"]` is 1: a batch is one call per text), `dimensions` 256, 512 or
  1024 (v2), `normalize` true; the answer is `embedding` and `inputTextTokenCount`.
- Cohere Embed (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`, `cohere.embed-v4:0`):
  up to 96 `texts`, a required `input_type` (`search_document` when the request names none, as
  for Cohere's own API), `output_dimension` for v4; the answer is `embeddings`, a list of float
  vectors (or, by type, `{"float": [...]}`), and the billed tokens are in the
  `X-Amzn-Bedrock-Input-Token-Count` header.

`invoke_and_read` makes the blocking call and reads the body; the adapter runs it on its pool.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from core.embeddings import EmbeddingRequest, EmbeddingResponse, InputType
from core.types import Usage
from workers.providers.base import estimated_usage
from workers.providers.errors import InvalidRequest, ProviderError

Family = Literal["titan", "cohere"]
BEDROCK_MAX_INPUTS: dict[Family, int] = {"titan": 1, "cohere": 96}
REGION_PREFIXES = ("us.", "eu.", "apac.", "global.")  # cross-region inference profiles
TOKEN_COUNT_HEADER = "x-amzn-bedrock-input-token-count"


def embedding_family(model_id: str) -> Family:
    """Which body an embedding model on Bedrock takes; InvalidRequest for one this adapter lacks."""
    name = model_id.split("/")[-1]  # an ARN ends with the model id
    for prefix in REGION_PREFIXES:
        name = name.removeprefix(prefix)
    if name.startswith("amazon.titan-embed-text"):
        return "titan"
    if name.startswith("cohere.embed"):
        return "cohere"
    raise InvalidRequest(
        f"Bedrock model {model_id!r}: no embedding body known for it (Titan Text Embeddings or Cohere Embed)"
    )


def embedding_body(family: Family, request: EmbeddingRequest) -> dict[str, Any]:
    if family == "titan":
        body: dict[str, Any] = {"inputText": request.inputs[0], "normalize": True}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        return body
    body = {
        "texts": request.inputs,
        "input_type": (request.input_type or InputType.SEARCH_DOCUMENT).value,
    }
    if request.dimensions is not None:
        body["output_dimension"] = request.dimensions
    return body


def invoke_and_read(
    client: Any, model_id: str, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """InvokeModel, blocking: the answer's JSON and its ResponseMetadata."""
    response = client.invoke_model(
        modelId=model_id, body=json.dumps(body), contentType="application/json", accept="application/json"
    )
    payload = json.loads(response["body"].read())
    return payload, response.get("ResponseMetadata") or {}


def from_bedrock_embedding(
    family: Family, payload: dict[str, Any], meta: dict[str, Any], request: EmbeddingRequest, model_id: str
) -> EmbeddingResponse:
    headers = meta.get("HTTPHeaders") or {}
    vectors: Any
    if family == "titan":
        vectors = [payload.get("embedding")]
        reported = payload.get("inputTextTokenCount")
    else:
        found = payload.get("embeddings")
        vectors = found.get("float") if isinstance(found, dict) else found
        reported = headers.get(TOKEN_COUNT_HEADER)
    if not isinstance(vectors, list) or len(vectors) != len(request.inputs) or None in vectors:
        raise ProviderError(f"Bedrock {model_id} answered no vector for each of {len(request.inputs)} texts")
    return EmbeddingResponse(
        vectors=vectors,
        usage=Usage(input_tokens=int(reported))
        if reported is not None
        else estimated_usage(request, "bedrock"),
        usage_estimated=reported is None,
        provider_request_id=meta.get("RequestId"),
        model=model_id,
    )
