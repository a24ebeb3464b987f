"""Document batches in embed mode: documents chunked, chunks packed into embedding calls.

`POST /v1/document_batches` with `mode=embed`, a `model` (one embedding model for the whole
corpus), `chunk_tokens` and `overlap_tokens`. Each document is cut into chunks of at most
`chunk_tokens` tokens, each overlapping the one before by about `overlap_tokens`
(`routing.chunking.chunk_text`); a chunk is identified by its document's id, its number in the
document and its char offsets. The chunks of every document, in order, are packed into as few
provider calls as the model's per-call limits allow (`CallPacker`: 10,000 chunks are
10,000 / 96 calls on Cohere, 10,000 / 2,048 on OpenAI when their tokens fit), one job per call,
stored held and released by the feeder (`workers/feeder.py`) as a chat batch's jobs are.

A document that cannot be used (not UTF-8, empty, a duplicate id) fails alone, as a job born
failed under its id. A JSONL line naming a `model` other than the batch's refuses the whole
batch: one corpus, one vector space.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from api.batch_intake import MAX_ID_LENGTH, MAX_LISTED_ERRORS, parse_document_line
from api.embedding_intake import (
    Call,
    CallPacker,
    check_dimensions,
    embedding_model,
    input_type_of,
    item,
    one_model,
)
from api.errors import ApiError
from core.embeddings import InputType
from core.providers import provider_spec
from jobstore.batch_models import Batch
from jobstore.batches import HELD_UNTIL, BulkJobWriter
from jobstore.embedding_jobs import embedding_job_row, embedding_request
from jobstore.models import JobStatus
from routing.catalog import Catalog, ModelSpec
from routing.chunking import chunk_text

DEFAULT_CHUNK_TOKENS = 512
DEFAULT_OVERLAP_SHARE = 8  # a default overlap of an eighth of a chunk


@dataclass(frozen=True)
class EmbedOptions:
    """How every document of an embed-mode batch is chunked and embedded."""

    model_name: str  # as the client named it: a model id or one of its deployments
    model: ModelSpec
    chunk_tokens: int
    overlap_tokens: int
    dimensions: int | None
    input_type: InputType | None
    deadline_s: float | None = None

    @property
    def vector_dims(self) -> int:
        return self.dimensions or self.model.dimensions or 0

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": "embed",
            "chunk_tokens": self.chunk_tokens,
            "overlap_tokens": self.overlap_tokens,
            "dimensions": self.dimensions,
            "vector_dims": self.vector_dims,
            "input_type": self.input_type.value if self.input_type else None,
            "deadline_s": self.deadline_s,
        }


def input_limit(model: ModelSpec) -> int:
    """The most tokens (o200k, before the provider's calibration) one chunk may have."""
    assert model.max_input_tokens is not None
    limit = min(model.max_input_tokens, model.max_tokens_per_call or model.max_input_tokens)
    return math.floor(limit / provider_spec(model.provider).token_calibration)


def embed_options(
    catalog: Catalog,
    *,
    model: str | None,
    chunk_tokens: int | None,
    overlap_tokens: int | None,
    dimensions: int | None,
    input_type: str | None,
    deadline_s: float | None,
) -> EmbedOptions:
    """The options checked, or a 4xx naming the form field at fault."""
    if not model:
        raise ApiError(
            422,
            "mode=embed needs a model: one embedding model embeds the whole corpus (GET /v1/models)",
            param="model",
            code="missing_model",
        )
    spec = embedding_model(model, catalog)
    check_dimensions(spec, dimensions)
    limit = input_limit(spec)
    size = chunk_tokens if chunk_tokens is not None else min(DEFAULT_CHUNK_TOKENS, limit)
    if not 1 <= size <= limit:
        raise ApiError(
            422,
            f"chunk_tokens must be between 1 and {limit} for {spec.id} (it takes {spec.max_input_tokens} "
            f"tokens an input, as {spec.provider} counts them), not {size}",
            param="chunk_tokens",
            code="invalid_value",
        )
    overlap = overlap_tokens if overlap_tokens is not None else size // DEFAULT_OVERLAP_SHARE
    if not 0 <= overlap < size:
        raise ApiError(
            422,
            f"overlap_tokens must be at least 0 and less than chunk_tokens ({size}), not {overlap}",
            param="overlap_tokens",
            code="invalid_value",
        )
    return EmbedOptions(model, spec, size, overlap, dimensions, input_type_of(input_type), deadline_s)


@dataclass
class EmbedIntake:
    """Adds documents to an embed-mode batch: chunks them, packs the chunks, writes the jobs."""

    batch: Batch
    writer: BulkJobWriter
    options: EmbedOptions
    catalog: Catalog
    seen: set[str] = field(default_factory=set)
    documents: int = 0
    chunks: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    _packer: CallPacker | None = None
    _calls_end: list[int] = field(default_factory=list)  # inputs packed up to each call's end
    _refused: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (chunks before, row)

    def __post_init__(self) -> None:
        self._packer = CallPacker(self.options.model, self._emit)
        self._deadline = (
            datetime.now(UTC) + timedelta(seconds=self.options.deadline_s)
            if self.options.deadline_s
            else None
        )

    @property
    def packer(self) -> CallPacker:
        assert self._packer is not None
        return self._packer

    @property
    def total(self) -> int:
        """The batch's jobs: one per call, and one per document refused at intake."""
        return self.packer.calls + self.rejected

    def _emit(self, call: Call) -> None:
        options = self.options
        request = embedding_request(
            [i.stored() for i in call.items],
            dimensions=options.dimensions,
            input_type=options.input_type.value if options.input_type else None,
        )
        self._calls_end.append(self.packer.inputs)  # the packer counted this call's inputs
        row = embedding_job_row(
            owner_id=self.batch.owner_id,
            model=self.options.model_name,
            request=request,
            batch_id=self.batch.id,
            line_number=len(self._calls_end),  # calls in input order: 1, 2, ...
            deadline_at=self._deadline,
            not_before=HELD_UNTIL,  # the feeder releases it
        )
        row["part"] = 0
        self.writer.add(row)

    def fail(self, line: int, doc_id: str, code: str, message: str) -> None:
        """A document refused at intake: a job born failed under its id, and a listed error. Its
        row waits for `close`, which places it after the call holding the chunk before it."""
        self.rejected += 1
        where = f"line {line}: {message}"
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append({"code": code, "message": where, "param": None, "line": line})
        row = embedding_job_row(
            owner_id=self.batch.owner_id,
            model=self.options.model_name,
            request={"inputs": []},
            batch_id=self.batch.id,
            custom_id=doc_id,
        )
        row.update(
            status=JobStatus.FAILED.value,
            error_type=code,
            error_message=where,
            finished_at=datetime.now(UTC),
        )
        self._refused.append((self.chunks, row))

    def add_document(self, line: int, doc_id: str, text: str, metadata: dict[str, Any]) -> None:
        if len(doc_id) > MAX_ID_LENGTH:
            self.fail(line, doc_id[:MAX_ID_LENGTH], "invalid_line", f"id longer than {MAX_ID_LENGTH}")
            return
        if doc_id in self.seen:
            self.fail(line, doc_id, "invalid_line", f"duplicate id {doc_id!r}")
            return
        self.seen.add(doc_id)
        pieces = chunk_text(text, self.options.chunk_tokens, self.options.overlap_tokens)
        if not pieces:
            self.fail(line, doc_id, "invalid_line", f"document {doc_id!r} is empty")
            return
        self.packer.add(
            item(
                f"{doc_id}#{number}",
                piece.text,
                tokens=piece.tokens,
                document=doc_id,
                chunk=number,
                start=piece.start_char,
                end=piece.end_char,
                **({"metadata": metadata} if metadata and number == 0 else {}),
            )
            for number, piece in enumerate(pieces)
        )
        self.documents += 1
        self.chunks += len(pieces)

    def add_jsonl(self, lines: Iterable[bytes]) -> None:
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            parsed = parse_document_line(raw, number)
            if isinstance(parsed, str):
                self.fail(number, f"line-{number}", "invalid_line", parsed)
                continue
            if b'"model"' in raw:
                self._same_model(json.loads(raw).get("model"), number)
            self.add_document(number, *parsed)

    def _same_model(self, named: Any, line: int) -> None:
        if named is None:
            return
        if not isinstance(named, str):
            raise ApiError(422, f"line {line}: 'model' must be a string", param="jsonl", code="invalid_value")
        try:
            one_model([self.options.model_name, named], self.catalog, param="model")
        except ApiError as exc:
            exc.message = f"line {line} names model {named!r}: {exc.message}"
            raise

    def add_file(self, number: int, name: str, binary: BinaryIO) -> None:
        try:
            text = binary.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(number, name, "invalid_line", f"{name} is not UTF-8 text: {exc}")
            return
        if not text.strip():
            self.fail(number, name, "invalid_line", f"{name} is empty")
            return
        self.add_document(number, name, text, {"filename": name})

    def close(self) -> None:
        """Pack the last call and write every row left (the caller commits). A refused
        document's row takes the line of the call holding the chunk before it (0 when none
        does) and a `part` after it, so results read back in input order."""
        self.packer.close()
        for number, (chunks_before, row) in enumerate(self._refused, 1):
            after = bisect_left(self._calls_end, chunks_before) + 1 if chunks_before else 0
            row.update(line_number=after)
            row.update(part=number, not_before=None)
            self.writer.add(row)
        self.writer.flush()

    def summary(self) -> dict[str, Any]:
        """What the batch's options record of its intake."""
        return {
            **self.options.as_json(),
            "documents": self.documents + self.rejected,
            "chunks": self.chunks,
            "calls": self.packer.calls,
            "estimated_cost_usd": f"{self.packer.estimate:f}",
        }
