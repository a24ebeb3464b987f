"""How embedding batches read back: chunk rows with their vectors, a NumPy matrix, usage and cost
per document, and the output lines of an OpenAI batch of `/v1/embeddings` requests.

A provider bills per call, and a call carries inputs of many documents (or request lines), so a
document's share of a call is apportioned: the call's billed tokens by each input's own count
(largest remainder, so the shares add up to the call's tokens exactly), and its cost the same
way in units of 1e-8 USD, so documents' costs add up to the batch's cost to the last digit.

Shared by the API (results, a document's summary) and the workers (the files a batch's finalize
writes): the vectors themselves stay in `job_vectors`; files carry usage, costs and errors, and
an OpenAI batch's output lines (which carry the vectors, as OpenAI's do).
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobstore.batch_models import Batch, BatchKind
from jobstore.batch_results import error_status, job_error, openai_error_line
from jobstore.batches import FileWriter
from jobstore.db import session_factory
from jobstore.embedding_jobs import StoredVector, iter_vectors, unpack
from jobstore.models import OPEN_JOB_STATUSES, Job, JobKind, JobStatus
from jobstore.result_pages import in_pages

QUANTUM = Decimal("0.00000001")  # the store's money precision (routing.costs.QUANTUM)
Encoding = Literal["float", "base64"]


def is_embed_mode(batch: Batch) -> bool:
    """A document batch that embeds (mode=embed) rather than generates."""
    return batch.kind == BatchKind.NATIVE and (batch.options or {}).get("mode") == "embed"


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights` (all equal when they sum to 0), in whole units
    that add up to `total`: each its floor, and the units left to the largest remainders."""
    if not weights:
        return []
    weights = [max(0, w) for w in weights] if sum(weights) > 0 else [1] * len(weights)
    whole = sum(weights)
    shares = [total * w // whole for w in weights]
    left = total - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares


def input_shares(job: Job) -> list[tuple[int, Decimal]]:
    """Each input's share of the job's billed tokens and cost (zero for a call not billed)."""
    inputs = (job.request or {}).get("inputs") or []
    weights = [int(item.get("tokens") or 0) for item in inputs]
    tokens = apportion(int(job.input_tokens or 0), weights)
    quanta = apportion(int(Decimal(job.cost_usd or 0) / QUANTUM), weights)
    return [(t, q * QUANTUM) for t, q in zip(tokens, quanta, strict=True)]


def _job_ids(session: Session, batch_id: str) -> list[str]:
    order = (Job.line_number, Job.part, Job.id)  # an embed batch's refused documents: after their call
    return list(session.scalars(select(Job.id).where(Job.batch_id == batch_id).order_by(*order)))


def _jobs(session: Session, batch_id: str) -> Iterator[Job]:
    """A batch's jobs in line order, loaded one at a time (a job's request holds its texts)."""
    for job_id in _job_ids(session, batch_id):
        job = session.get(Job, job_id)
        if job is not None:
            yield job
            session.expunge(job)


def _vectors(session: Session, job: Job) -> Iterator[StoredVector | None]:
    """The job's vectors in input order, or None for each input of a job that did not succeed."""
    inputs = (job.request or {}).get("inputs") or []
    if job.status == JobStatus.SUCCEEDED:
        yield from iter_vectors(session, job.id)
    else:
        yield from (None for _ in inputs)


def _jobs_with_vectors(
    batch_id: str, status: str | None = None
) -> Iterator[tuple[Job, list[StoredVector | None]]]:
    """A batch's jobs in line order (`status`: only those in it), each with its vectors, read
    for a download: each job in a short session of its own (`jobstore.result_pages`), so a
    stalled client holds nothing. The ids are read when it is called, not at the first row."""
    with session_factory()() as session:
        ids = _job_ids(session, batch_id)

    def read(session: Session, page: Sequence[str]) -> list[tuple[Job, list[StoredVector | None]]]:
        loaded = [session.get(Job, job_id) for job_id in page]
        wanted = [j for j in loaded if j is not None and (status is None or j.status == status)]
        return [(job, list(_vectors(session, job))) for job in wanted]

    return in_pages(ids, read, 1)  # one job a page: a call's vectors (up to 2,048 inputs)


def _error(job: Job) -> dict[str, Any] | None:
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        return job_error(job)
    return None


# ---------------------------------------------------------------- document batches in embed mode


def chunk_rows(
    batch_id: str,
    *,
    include_text: bool = False,
    include_vectors: bool = True,
    encoding: Encoding = "float",
    status: str | None = None,
) -> Iterator[dict[str, Any]]:
    """One row per chunk, in input order: {document, chunk, start, end, text?, embedding}. A
    chunk not embedded (yet) has `embedding` null, its `status`, its `id` and `job_id`, and
    the `error` if its call failed; a document refused at intake is one row with its `error`
    and no chunk. `status`: only the chunks whose call is in it (e.g. failed)."""
    for job, vectors in _jobs_with_vectors(batch_id, status):
        inputs = (job.request or {}).get("inputs") or []
        if not inputs:  # a document refused at intake
            yield {
                "document": job.custom_id,
                "chunk": None,
                "embedding": None,
                "id": job.custom_id,
                "status": job.status,
                "error": job_error(job),
                "job_id": job.id,
            }
            continue
        error = _error(job)
        for item, stored in zip(inputs, vectors, strict=True):
            row: dict[str, Any] = {
                "document": item.get("document"),
                "chunk": item.get("chunk"),
                "start": item.get("start"),
                "end": item.get("end"),
            }
            if include_text:
                row["text"] = item.get("text")
            if include_vectors:
                row["embedding"] = None if stored is None else encode(stored.blob, encoding)
            if stored is None:
                row.update(id=item.get("id"), status=job.status, job_id=job.id)
                if error is not None:
                    row["error"] = error
            yield row


def encode(blob: bytes, encoding: Encoding) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(blob).decode("ascii")
    return unpack(blob)


def npy_header(rows: int, dims: int) -> bytes:
    """The header of a NumPy .npy file (format 1.0) holding a rows x dims float32 matrix."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dims}), }}"
    padding = 64 - (10 + len(text) + 1) % 64
    header = (text + " " * (padding % 64) + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npy_chunks(batch: Batch) -> Iterator[bytes]:
    """The batch's chunk vectors as one .npy matrix, row i the i-th chunk of `chunk_rows`
    (documents refused at intake have no row); a chunk whose call failed is a row of NaN."""
    options = batch.options or {}
    rows, dims = int(options.get("chunks") or 0), int(options.get("vector_dims") or 0)
    jobs = _jobs_with_vectors(batch.id)  # its ids read first: a database away fails the first chunk
    yield npy_header(rows, dims)
    missing = struct.pack(f"<{dims}f", *([math.nan] * dims))
    for _, vectors in jobs:
        for stored in vectors:
            yield missing if stored is None or stored.dims != dims else stored.blob


@dataclass
class DocumentTotals:
    document: str
    chunks: int = 0
    input_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    statuses: set[str] = field(default_factory=set)
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        for status in (JobStatus.FAILED, JobStatus.CANCELLED):
            if status in self.statuses:
                return status.value
        if self.statuses & set(OPEN_JOB_STATUSES):
            return "in_progress"
        return JobStatus.SUCCEEDED.value

    def row(self) -> dict[str, Any]:
        return {
            "document": self.document,
            "status": self.status,
            "chunks": self.chunks,
            "input_tokens": self.input_tokens,
            "cost_usd": str(self.cost_usd),
            "error": self.error,
            "metadata": self.metadata,
        }


def document_totals(session: Session, batch_id: str) -> list[DocumentTotals]:
    """Each document's chunks, status, and share of its calls' tokens and cost, in input order."""
    found: dict[str, DocumentTotals] = {}
    for job in _jobs(session, batch_id):
        inputs = (job.request or {}).get("inputs") or []
        if not inputs:
            doc = found.setdefault(job.custom_id or "", DocumentTotals(job.custom_id or ""))
            doc.statuses.add(job.status)
            doc.error = doc.error or job_error(job)
            continue
        error = _error(job)
        for item, (tokens, cost) in zip(inputs, input_shares(job), strict=True):
            name = str(item.get("document"))
            doc = found.setdefault(name, DocumentTotals(name))
            doc.chunks += 1
            doc.input_tokens += tokens
            doc.cost_usd += cost
            doc.statuses.add(job.status)
            doc.metadata = doc.metadata or item.get("metadata") or {}
            if error is not None and doc.error is None:
                doc.error = error
    return list(found.values())


# ---------------------------------------------------------------- OpenAI batches of /v1/embeddings lines


def openai_embedding_lines(session: Session, job: Job) -> Iterator[tuple[bool, dict[str, Any]]]:
    """The output (True) or error (False) line of each request line a job carries, in order."""
    inputs = (job.request or {}).get("inputs") or []
    if job.kind != JobKind.EMBEDDING or not inputs:  # a line refused at intake
        yield False, openai_error_line(job)
        return
    lines: dict[str, list[tuple[dict[str, Any], StoredVector | None, int]]] = {}
    shares = input_shares(job)
    for item, stored, (tokens, _) in zip(inputs, _vectors(session, job), shares, strict=True):
        lines.setdefault(str(item["line"]), []).append((item, stored, tokens))
    for number, (custom_id, items) in enumerate(lines.items()):
        request_id = f"batch_req_{job.id}_{number}"
        if job.status != JobStatus.SUCCEEDED:
            error = job_error(job)
            status = error_status(job)
            body = {"error": {**error, "type": "api_error" if status >= 500 else "invalid_request_error"}}
            yield (
                False,
                {
                    "id": request_id,
                    "custom_id": custom_id,
                    "response": {"status_code": status, "request_id": job.id, "body": body},
                    "error": error,
                },
            )
            continue
        tokens = sum(t for _, _, t in items)
        data = [
            {
                "object": "embedding",
                "index": int(item["index"]),
                "embedding": encode(stored.blob, item.get("encoding_format") or "float")
                if stored is not None
                else None,
            }
            for item, stored, _ in items
        ]
        answer: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": job.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        yield (
            True,
            {
                "id": request_id,
                "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": job.id, "body": answer},
                "error": None,
            },
        )


def write_embedding_files(session: Session, batch: Batch) -> tuple[str | None, str | None]:
    """A finished embedding batch's files: an OpenAI batch's output and error lines (by
    custom_id), or a document batch's usage and cost per document (its errors apart)."""
    out = FileWriter(session, batch.owner_id, f"{batch.id}_output.jsonl", "batch_output")
    err = FileWriter(session, batch.owner_id, f"{batch.id}_errors.jsonl", "batch_output")
    if batch.kind == BatchKind.OPENAI:
        for job in _jobs(session, batch.id):
            for ok, line in openai_embedding_lines(session, job):
                (out if ok else err).write_line(line)
    else:
        for doc in document_totals(session, batch.id):
            row = doc.row()
            out.write_line(row)
            if doc.status != JobStatus.SUCCEEDED:
                err.write_line(row)
    out_file, err_file = out.close(), err.close()
    if batch.kind == BatchKind.OPENAI:
        return (out_file.id if out_file.line_count else None), (err_file.id if err_file.line_count else None)
    return out_file.id, (err_file.id if err_file.line_count else None)
