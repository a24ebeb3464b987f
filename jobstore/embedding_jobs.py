"""Embedding jobs in the store: the row of one planned provider call, and its vectors.

An embedding job (`jobs.kind = 'embedding'`) is ONE provider call. Its `request` holds the
call's inputs in order, each a dict with at least its `id`, its `text` and its o200k count
`tokens` (plus whatever the results need to say where it came from: a document and its char
offsets, an OpenAI batch line and the index in it), and the call's `dimensions` and
`input_type`. Its `model_requested` names the one model (or deployment) it may be served by,
and `request_tokens` is the sum of its inputs' counts, which the dispatcher books against
capacity and budgets.

In a batch, `line_number` orders the jobs as their inputs were given (and, for a document
refused at intake in embed mode, `part` places its row after the call before it).

Its vectors are written in the transaction that writes its result (`insert_vectors`, one
executemany), one `job_vectors` row per input: float32, little-endian, the bytes OpenAI's
`encoding_format=base64` carries, so an answer in base64 is the stored bytes encoded.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.embeddings import EmbeddingRequest, InputType
from jobstore.models import Job, JobKind, JobStatus, JobVector, new_id

SAME_MODEL = "same_model"  # an embedding job's strategy (routing.embeddings.SAME_MODEL)
_vectors = cast(Table, JobVector.__table__)
_LITTLE_ENDIAN = sys.byteorder == "little"


# ---------------------------------------------------------------- the job


def embedding_request(
    inputs: Sequence[Mapping[str, Any]], *, dimensions: int | None, input_type: str | None
) -> dict[str, Any]:
    """The `request` of an embedding job: its inputs (dicts with id, text, tokens, ...) in order."""
    request: dict[str, Any] = {"inputs": [dict(item) for item in inputs]}
    if dimensions is not None:
        request["dimensions"] = dimensions
    if input_type is not None:
        request["input_type"] = input_type
    return request


def embedding_job_row(
    *,
    owner_id: str,
    model: str,
    request: dict[str, Any],
    batch_id: str | None = None,
    custom_id: str | None = None,
    line_number: int | None = None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    deadline_at: datetime | None = None,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """A queued embedding job's row, for `insert_jobs` (every column a job needs at insert)."""
    now = utcnow()
    return {
        "id": new_id("job"),
        "owner_id": owner_id,
        "idempotency_key": idempotency_key,
        "request_hash": "",
        "status": JobStatus.QUEUED.value,
        "kind": JobKind.EMBEDDING.value,
        "request": request,
        "model_requested": model,
        "strategy": SAME_MODEL,
        "routing": {},
        "job_metadata": metadata or {},
        "stream": False,
        "request_tokens": sum(int(item["tokens"]) for item in request["inputs"]),
        "deadline_at": deadline_at,
        "not_before": not_before,
        "batch_id": batch_id,
        "custom_id": custom_id,
        "line_number": line_number,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_input_tokens": 0,
        "reasoning_tokens": 0,
        "cost_usd": Decimal(0),
        "attempt_count": 0,
        "created_at": now,
        "updated_at": now,
    }


def insert_jobs(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert job rows in one statement (the caller commits, then dispatches the queued ones)."""
    if rows:
        session.execute(insert(Job), list(rows))


def call_request(request: Mapping[str, Any], request_tokens: int | None) -> EmbeddingRequest:
    """The adapter's request for an embedding job's call: its texts in order."""
    input_type = request.get("input_type")
    return EmbeddingRequest(
        inputs=[item["text"] for item in request["inputs"]],
        dimensions=request.get("dimensions"),
        input_type=InputType(input_type) if input_type else None,
        counted_tokens=request_tokens,
    )


def input_ids(request: Mapping[str, Any]) -> list[str]:
    return [str(item["id"]) for item in request.get("inputs") or ()]


# ---------------------------------------------------------------- vectors


def pack(vector: Iterable[float]) -> bytes:
    """A vector as little-endian float32 bytes (what OpenAI's base64 encoding carries)."""
    values = array("f", vector)
    if not _LITTLE_ENDIAN:
        values.byteswap()
    return values.tobytes()


def unpack(blob: bytes) -> list[float]:
    values = array("f")
    values.frombytes(blob)
    if not _LITTLE_ENDIAN:
        values.byteswap()
    return values.tolist()


@dataclass(frozen=True)
class CallVectors:
    """What a succeeded embedding call returned, packed: `blobs[i]` is the vector of `ids[i]`."""

    ids: tuple[str, ...]
    dims: int
    blobs: tuple[bytes, ...]

    @classmethod
    def of(cls, ids: Sequence[str], vectors: Sequence[Sequence[float]]) -> CallVectors:
        """Pack a call's vectors; ValueError when they are not one per id, all of one length."""
        if len(vectors) != len(ids):
            raise ValueError(f"{len(vectors)} vectors for {len(ids)} inputs")
        dims = {len(v) for v in vectors}
        if len(dims) != 1 or 0 in dims:
            raise ValueError(f"the vectors' lengths differ or are empty: {sorted(dims)}")
        return cls(tuple(ids), dims.pop(), tuple(pack(v) for v in vectors))


def insert_vectors(session: Session, calls: Sequence[tuple[str, CallVectors]]) -> None:
    """Write the vectors of these (job id, call) pairs: one executemany for all of them, in the
    transaction that writes the jobs' results (`workers/calls.py`)."""
    rows = [
        {"job_id": job_id, "position": i, "input_id": input_id, "dims": call.dims, "vector": blob}
        for job_id, call in calls
        for i, (input_id, blob) in enumerate(zip(call.ids, call.blobs, strict=True))
    ]
    if rows:
        session.connection().execute(insert(_vectors), rows)


@dataclass(frozen=True, slots=True)
class StoredVector:
    position: int
    input_id: str
    dims: int
    blob: bytes

    @property
    def values(self) -> list[float]:
        return unpack(self.blob)


def vectors_of(session: Session, job_ids: Sequence[str]) -> dict[str, list[StoredVector]]:
    """The vectors of these jobs, each job's in input order ({} for a job without any)."""
    found: dict[str, list[StoredVector]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    rows = session.execute(
        select(*(_vectors.c[name] for name in ("job_id", "position", "input_id", "dims", "vector")))
        .where(_vectors.c.job_id.in_(list(job_ids)))
        .order_by(_vectors.c.job_id, _vectors.c.position)
    )
    for job_id, position, input_id, dims, blob in rows:
        found[job_id].append(StoredVector(position, input_id, dims, bytes(blob)))
    return found


def iter_vectors(session: Session, job_id: str) -> Iterator[StoredVector]:
    """One job's vectors in input order, read a few hundred rows at a time."""
    rows = session.execute(
        select(_vectors.c.position, _vectors.c.input_id, _vectors.c.dims, _vectors.c.vector)
        .where(_vectors.c.job_id == job_id)
        .order_by(_vectors.c.position)
        .execution_options(yield_per=500)
    )
    for position, input_id, dims, blob in rows:
        yield StoredVector(position, input_id, dims, bytes(blob))
