"""Gemini's embeddings (the Gemini Developer API): the translation `GeminiProvider.embed`
(gemini.py) uses.

`google-genai`'s `models.embed_content` sends one `batchEmbedContents` request holding one
request per text, at most 100 (`GEMINI_MAX_INPUTS`), and gets the vectors back in request
order. `input_type` becomes the task type (`RETRIEVAL_DOCUMENT`, `RETRIEVAL_QUERY`,
`CLASSIFICATION`, `CLUSTERING`) and `dimensions` the `output_dimensionality`. The Developer API
reports no token count for embeddings, so usage is the texts' tokens as routing counts them,
calibrated for Gemini, and marked estimated, unless the answer carries `usage_metadata`.
"""

from __future__ import annotations

from typing import Any

from google.genai import types

from core.embeddings import EmbeddingRequest, EmbeddingResponse, InputType
from core.types import Usage, pick_rate_limit_headers
from workers.providers.base import estimated_usage
from workers.providers.errors import ProviderError

GEMINI_MAX_INPUTS = 100  # "at most 100 requests can be in one batch"
TASK_TYPES = {
    InputType.SEARCH_DOCUMENT: "RETRIEVAL_DOCUMENT",
    InputType.SEARCH_QUERY: "RETRIEVAL_QUERY",
    InputType.CLASSIFICATION: "CLASSIFICATION",
    InputType.CLUSTERING: "CLUSTERING",
}


def to_gemini_embed_config(request: EmbeddingRequest) -> types.EmbedContentConfig:
    return types.EmbedContentConfig(
        task_type=TASK_TYPES[request.input_type] if request.input_type is not None else None,
        output_dimensionality=request.dimensions,
    )


def from_gemini_embeddings(response: Any, request: EmbeddingRequest) -> EmbeddingResponse:
    embeddings = response.embeddings or []
    vectors = [e.values for e in embeddings]
    if len(vectors) != len(request.inputs) or any(v is None for v in vectors):
        raise ProviderError(f"Gemini answered {len(vectors)} embeddings for {len(request.inputs)} texts")
    meta = response.usage_metadata
    reported = meta.prompt_token_count if meta is not None else None
    http = response.sdk_http_response
    return EmbeddingResponse(
        vectors=vectors,
        usage=Usage(input_tokens=reported) if reported is not None else estimated_usage(request, "gemini"),
        usage_estimated=reported is None,
        rate_limit_headers=pick_rate_limit_headers(http.headers if http is not None else None),
    )
