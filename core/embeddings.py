"""The normalized embedding request and response every provider adapter translates to and from.

`EmbeddingRequest` is what one provider call embeds: its texts in order (at most the model's
`max_inputs_per_call`, which routing's planner guarantees and each adapter checks again), an
optional output length and what the vectors are for (`InputType`; Cohere requires it, Gemini maps
it to a task type, the others ignore it). `EmbeddingResponse` holds one vector per input in input
order, whatever order the provider sent them in, with the call's usage as the chat `Usage` (input
tokens only), so costs and job records treat both kinds of call alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.types import Usage


class InputType(StrEnum):
    """What the vectors are for. Retrieval embeds a corpus as documents and questions as queries."""

    SEARCH_DOCUMENT = "search_document"
    SEARCH_QUERY = "search_query"
    CLASSIFICATION = "classification"
    CLUSTERING = "clustering"


class EmbeddingRequest(BaseModel):
    """One provider call's worth of texts. The model is the deployment's, not the request's."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    inputs: list[str] = Field(min_length=1)
    dimensions: int | None = Field(default=None, ge=1)  # None: the model's native length
    input_type: InputType | None = None
    # The inputs' o200k token count when the caller already made it (routing's planner does):
    # adapters whose provider reports no usage bill by it, calibrated for the provider, instead
    # of tokenizing the texts again.
    counted_tokens: int | None = Field(default=None, ge=0)

    @field_validator("inputs")
    @classmethod
    def _no_empty_input(cls, inputs: list[str]) -> list[str]:
        # Every provider refuses an empty text; say which one here rather than get a bare 400.
        for index, text in enumerate(inputs):
            if not text:
                raise ValueError(f"inputs[{index}] is empty: every input needs some text")
        return inputs


# A dataclass, not a pydantic model: a response of 2,048 vectors of 3,072 floats would cost
# pydantic a validation pass over six million floats the SDK has already parsed.
@dataclass(frozen=True)
class EmbeddingResponse:
    """What a provider answered: `vectors[i]` embeds `request.inputs[i]`."""

    vectors: list[list[float]]
    usage: Usage = field(default_factory=Usage)
    # True when the provider reported no token count and `usage` is our calibrated estimate.
    usage_estimated: bool = False
    provider_request_id: str | None = None
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    model: str | None = None  # the model name the provider reported, when it did
