"""Cohere's v2 Embed API: the translation `CohereProvider.embed` (cohere.py) uses.

One call embeds up to 96 texts (`COHERE_MAX_INPUTS`). Embed v3 and newer require an
`input_type`; a request without one is embedded as `search_document`, since a corpus is what a
batch embeds (a question should say `search_query`). `dimensions` becomes `output_dimension`
(Embed v4: 256, 512, 1024 or 1536; v3 refuses it). Vectors are asked for as floats, and usage
read from `meta.billed_units.input_tokens`, what Cohere charges for.
"""

from __future__ import annotations

from typing import Any

from core.embeddings import EmbeddingRequest, EmbeddingResponse, InputType
from core.types import Usage
from workers.providers.base import estimated_usage
from workers.providers.errors import ProviderError

COHERE_MAX_INPUTS = 96  # "Maximum number of texts per call is 96"
DEFAULT_INPUT_TYPE = InputType.SEARCH_DOCUMENT


def to_cohere_embed_params(request: EmbeddingRequest, model: str) -> dict[str, Any]:
    """Keyword arguments for `AsyncClientV2.embed`."""
    params: dict[str, Any] = {
        "model": model,
        "texts": request.inputs,
        "input_type": (request.input_type or DEFAULT_INPUT_TYPE).value,
        "embedding_types": ["float"],
    }
    if request.dimensions is not None:
        params["output_dimension"] = request.dimensions
    return params


def from_cohere_embed(
    response: Any, headers: dict[str, str], request: EmbeddingRequest, model: str
) -> EmbeddingResponse:
    vectors = response.embeddings.float_
    if vectors is None or len(vectors) != len(request.inputs):
        got = 0 if vectors is None else len(vectors)
        raise ProviderError(f"Cohere answered {got} float vectors for {len(request.inputs)} texts")
    billed = response.meta.billed_units if response.meta is not None else None
    reported = billed.input_tokens if billed is not None else None
    return EmbeddingResponse(
        vectors=vectors,
        usage=Usage(input_tokens=int(reported))
        if reported is not None
        else estimated_usage(request, "cohere"),
        usage_estimated=reported is None,
        provider_request_id=response.id,
        rate_limit_headers=headers,
        model=model,  # Cohere does not report the model it used
    )
