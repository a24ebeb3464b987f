"""Embedding request and answer shapes: OpenAI's `POST /v1/embeddings` body and answer, the body
of an asynchronous embedding submission, and an embedding job's vectors as `GET /v1/jobs/{id}`
shows them.

`input` is a string or a list of strings (OpenAI's token arrays are refused: llmqueue counts,
packs and routes text, and most providers take only text). `encoding_format` is OpenAI's:
`float`, or `base64` (little-endian float32s, which the official SDK asks for by default and
decodes itself). `input_type` is an llmqueue extension (the SDK sends it with `extra_body`):
what the vectors are for, which Cohere requires and Gemini maps to a task type.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobstore.embedding_jobs import StoredVector, unpack

EncodingFormat = Literal["float", "base64"]


class EmbeddingsCreate(BaseModel):
    """The body of OpenAI's `POST /v1/embeddings`."""

    model_config = ConfigDict(extra="ignore")  # OpenAI's `user` and the like: accepted, unused
    model: str = Field(min_length=1, description="An embedding model or one of its deployments.")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text or a list of texts (any number: llmqueue packs them into provider calls)."
    )
    dimensions: int | None = Field(default=None, ge=1, description="Shorter vectors, where the model can.")
    encoding_format: EncodingFormat = "float"
    input_type: str | None = Field(
        default=None,
        description="llmqueue extension: search_document, search_query, classification or clustering.",
    )


class InputText(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=255)
    text: str


class EmbeddingJobsCreate(BaseModel):
    """`POST /v1/embeddings/jobs`: embed without waiting; one job per provider call."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model": "text-embedding-3-small",
                    "input": [{"id": "faq-1", "text": "How do I reset my password?"}],
                    "dimensions": 256,
                }
            ]
        },
    )
    model: str = Field(min_length=1, description="An embedding model or one of its deployments.")
    input: str | list[str] | list[InputText] = Field(
        description="Texts, or {id, text} objects; a text's id is its index when it has none."
    )
    dimensions: int | None = Field(default=None, ge=1)
    input_type: str | None = None
    deadline_s: float | None = Field(
        default=None, gt=0, description="Give up this many seconds after submit."
    )
    metadata: dict[str, Any] = Field(default_factory=dict)


class EmbeddingJobAccepted(BaseModel):
    id: str
    status: str
    url: str
    inputs: int = Field(description="How many of the inputs this job (one provider call) embeds.")
    first_input: int = Field(description="The index of its first input in the request.")


class EmbeddingJobsAccepted(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[EmbeddingJobAccepted]
    inputs: int
    estimated_cost_usd: str


class VectorPublic(BaseModel):
    index: int = Field(description="Its position among the job's inputs.")
    id: str = Field(description="The input's id.")
    embedding: list[float] | str = Field(description="The vector (base64 of float32s if asked).")

    @classmethod
    def of(cls, stored: StoredVector, encoding: EncodingFormat) -> VectorPublic:
        return cls(index=stored.position, id=stored.input_id, embedding=encoded(stored.blob, encoding))


def encoded(blob: bytes, encoding: EncodingFormat) -> list[float] | str:
    """A stored vector as an answer carries it: floats, or base64 of its float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(blob).decode("ascii")
    return unpack(blob)


class ChunkError(BaseModel):
    code: str
    message: str


class ChunkRow(BaseModel):
    """One chunk of an embed-mode document batch (a line of its /results)."""

    document: str | None = Field(description="The document's id (its file name, or the JSONL line's id).")
    chunk: int | None = Field(description="Its number in the document, from 0; null: a document refused.")
    start: int | None = Field(default=None, description="Its first character in the document.")
    end: int | None = Field(default=None, description="One past its last: text == document[start:end].")
    text: str | None = Field(default=None, description="With include_text=true.")
    embedding: list[float] | str | None = Field(
        default=None,
        description="The vector (base64 float32s with encoding_format=base64); null until embedded.",
    )
    id: str | None = Field(default=None, description="A chunk not embedded: its input id, document#chunk.")
    status: str | None = Field(default=None, description="A chunk not embedded: its call's status.")
    job_id: str | None = Field(default=None, description="A chunk not embedded: its call's job.")
    error: ChunkError | None = None


class EmbeddedDocument(BaseModel):
    """One document of an embed-mode batch: its chunks and its share of the calls' cost."""

    document: str
    status: str = Field(description="succeeded, failed, cancelled or in_progress (over its chunks' calls).")
    chunks: int
    input_tokens: int = Field(
        description="Its chunks' share of the billed tokens of the calls that carried them."
    )
    cost_usd: str = Field(
        description="Its share of those calls' cost; documents' costs add up to the batch's."
    )
    error: ChunkError | None
    metadata: dict[str, Any]


class EmbeddingDatum(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 float32s (encoding_format=base64).")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsExtension(BaseModel):
    job_ids: list[str] = Field(description="The jobs (one per provider call) that embedded the inputs.")
    calls: int
    deployments: list[str]
    cost_usd: str = Field(description="Decimal USD, as a string to keep every digit.")


class EmbeddingsAnswer(BaseModel):
    """OpenAI's embeddings answer, with an `llmqueue` extension object."""

    object: Literal["list"] = "list"
    data: list[EmbeddingDatum] = Field(description="One vector per input, in input order.")
    model: str
    usage: EmbeddingsUsage
    llmqueue: EmbeddingsExtension
