"""What an embed-mode document batch reads back: its chunks' vectors, and usage and cost per
document.

- `GET /v1/document_batches/{id}/results` (in `document_batches.py`, which hands an embed-mode
  batch here): one JSONL row per chunk, in input order, `{document, chunk, start, end, text?,
  embedding}` (`include_text`, `include_vectors`, `encoding_format` float or base64); or
  `format=npy`, the vectors as one NumPy float32 matrix (`numpy.load` reads it), row i being
  line i of the JSONL (a chunk whose call failed is a row of NaN). Written here without NumPy:
  the .npy format is a short header and the raw float32s, which is how the vectors are stored.
  Parquet is not offered: it would need pyarrow (about 40 MB) on the API for one output format.
- `GET /v1/document_batches/{id}/documents`: each document's chunks, status, input tokens and
  cost (its share of the provider calls that carried its chunks; the shares add up to the
  batch's cost exactly), as JSONL. The batch's output file holds the same rows once it ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import OwnerDep, SessionDep, StreamSessionDep
from api.downloads import started_stream
from api.errors import ApiError
from api.openapi import schema_ref, streamed
from api.schemas.embeddings import EmbeddedDocument
from jobstore import batches
from jobstore.batch_models import Batch, BatchKind
from jobstore.embedding_results import Encoding, chunk_rows, document_totals, is_embed_mode, npy_chunks

router = APIRouter(prefix="/v1/document_batches", tags=["document batches"])


def _lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, default=str) + "\n"


def _chunks(
    batch_id: str, include_text: bool, include_vectors: bool, encoding: Encoding, status: str | None
) -> Iterator[str]:
    rows = chunk_rows(
        batch_id, include_text=include_text, include_vectors=include_vectors, encoding=encoding, status=status
    )
    yield from _lines(rows)


def embed_results(
    batch: Batch,
    fmt: str,
    *,
    include_text: bool,
    include_vectors: bool,
    encoding: Encoding,
    status: str | None = None,
) -> StreamingResponse:
    """An embed-mode batch's chunk results as JSONL (`status`: only chunks whose call is in it)
    or .npy (every chunk), streamed."""
    # Started: the first chunk (the first database read) is taken before the answer, so a
    # database away is a 503, not a 200 cut short (`api.downloads.started_stream`).
    if fmt == "npy":
        return started_stream(
            npy_chunks(batch),
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{batch.id}.npy"'},
        )
    if fmt != "jsonl":
        raise ApiError(
            400, "an embed-mode batch's results are jsonl or npy", param="format", code="invalid_value"
        )
    return started_stream(
        _chunks(batch.id, include_text, include_vectors, encoding, status), media_type="application/x-ndjson"
    )


def document_summary(session: SessionDep, batch: Batch, doc_id: str) -> dict[str, Any]:
    """One document of an embed-mode batch: its chunks (ids and offsets), status, usage and cost."""
    for doc in document_totals(session, batch.id):
        if doc.document == doc_id:
            return doc.row()
    raise ApiError(
        404, f"no document {doc_id!r} in batch {batch.id}", param="doc_id", code="document_not_found"
    )


@router.get(
    "/{batch_id}/documents",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One EmbeddedDocument a line, in input order",
            "content": streamed("application/x-ndjson", "rows", schema_ref(EmbeddedDocument)),
        },
        400: {"description": "The batch generates text (mode=generate): its /results are per document"},
        404: {"description": "No such document batch for this key"},
    },
)
def embed_documents(batch_id: str, session: StreamSessionDep, owner: OwnerDep) -> StreamingResponse:
    """An embed-mode batch's documents, in input order: chunks, status, input tokens, cost."""
    batch = batches.owned(session, Batch, batch_id, owner.id)
    if batch is None or batch.kind != BatchKind.NATIVE:
        raise ApiError(
            404, f"no document batch {batch_id!r} for this API key", param="batch_id", code="batch_not_found"
        )
    if not is_embed_mode(batch):
        raise ApiError(
            400,
            "this batch generates text: its results (GET .../results) are already one row a document",
            param="batch_id",
            code="not_embed_mode",
        )
    rows = [doc.row() for doc in document_totals(session, batch.id)]
    return StreamingResponse(_lines(iter(rows)), media_type="application/x-ndjson")
