"""Mistral's embeddings API: the translation `MistralProvider.embed` (mistral.py) uses.

Mistral caps a call at 256 inputs (`MISTRAL_MAX_INPUTS`: undocumented, but the live API refuses
257 with "Too many inputs in request, split into more batches.") and at 16,384 tokens summed
over them, which the catalog's `max_tokens_per_call` carries for the planner. `dimensions`
becomes `output_dimension` (codestral-embed; mistral-embed is always 1024 long and refuses it).
Vectors come back as floats with the index of their input; usage is `prompt_tokens`.
"""

from __future__ import annotations

from typing import Any

from core.embeddings import EmbeddingRequest, EmbeddingResponse
from core.types import Usage, pick_rate_limit_headers
from workers.providers.base import estimated_usage, vectors_in_order

MISTRAL_MAX_INPUTS = 256


def to_mistral_embed_params(request: EmbeddingRequest, model: str) -> dict[str, Any]:
    """Keyword arguments for `embeddings.create_async`."""
    params: dict[str, Any] = {"model": model, "inputs": request.inputs}
    if request.dimensions is not None:
        params["output_dimension"] = request.dimensions
    return params


def from_mistral_embeddings(response: Any, headers: Any, request: EmbeddingRequest) -> EmbeddingResponse:
    indexed = ((d.index if d.index is not None else i, d.embedding) for i, d in enumerate(response.data))
    reported = response.usage.prompt_tokens if response.usage is not None else None
    return EmbeddingResponse(
        vectors=vectors_in_order(indexed, len(request.inputs)),
        usage=Usage(input_tokens=reported) if reported is not None else estimated_usage(request, "mistral"),
        usage_estimated=reported is None,
        provider_request_id=response.id,
        rate_limit_headers=pick_rate_limit_headers(headers),
        model=response.model,
    )
