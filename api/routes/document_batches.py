"""/v1/document_batches: many documents, one prompt template, routed like jobs.

Submit documents as multipart `files` (one document each) or as one `jsonl` file of
`{"id", "text", "metadata"}` lines, with a `prompt` containing `{document}`. Progress is
counted from the batch's jobs; results stream as JSONL or CSV; a document reads back alone.
A document longer than its model's context is split and its parts' answers combined
(`on_too_long=split`, map then reduce), or fails alone (`reject`). With a deadline that allows
it, or `delivery=economy`, documents may go through a provider's own batch API at its batch prices
(workers/economy_feeder.py); the batch lists those provider batches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select

from api.batch_intake import (
    Intake,
    NativeOptions,
    add_document,
    add_jsonl_documents,
)
from api.budget_checks import require_budget_left, set_batch_budget
from api.deps import OwnerDep, SessionDep, StreamSessionDep
from api.downloads import attachment, started_stream
from api.embed_batches import EmbedIntake, EmbedOptions, embed_options
from api.errors import ApiError
from api.idempotency import Idempotency, idempotent
from api.job_intake import draft_job, owner_budget
from api.limits import check_metadata, check_placeholder, check_webhook_url, limited_lines
from api.openapi import schema_ref, streamed
from api.routes.embed_results import document_summary, embed_results
from api.schemas.batches import DocumentBatch, DocumentBatchList, DocumentDetail, DocumentRow, EconomyView
from api.schemas.embeddings import ChunkRow, EmbeddedDocument, EncodingFormat
from api.schemas.jobs import JobCreate
from api.schemas.keys import MAX_USD
from api.validation import check_routable
from jobstore import batch_results, batches
from jobstore.batch_models import Batch, BatchKind, BatchStatus
from jobstore.batches import EconomyMode
from jobstore.embedding_jobs import SAME_MODEL
from jobstore.embedding_results import is_embed_mode
from jobstore.models import ApiKey, Job
from jobstore.result_pages import document_rows
from routing.catalog import get_catalog
from routing.documents import PLACEHOLDER, fill, window_for
from workers.messages import send_batch_check, send_dispatch
from workers.queues import Priority

router = APIRouter(prefix="/v1/document_batches", tags=["document batches"])


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _routing_options(session: SessionDep, owner: ApiKey, prompt: str, fields: dict[str, Any]) -> JobCreate:
    """The options as a JobCreate with a sample document, checked exactly as a job would be."""
    check_placeholder(prompt, PLACEHOLDER)
    try:
        create = JobCreate(
            messages=[{"role": "user", "content": fill(prompt, "sample")}],
            **{k: v for k, v in fields.items() if v is not None},
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _FORM_NAMES.get(
            ".".join(str(p) for p in first["loc"]), ".".join(str(p) for p in first["loc"])
        )
        raise ApiError(422, f"{where}: {first['msg']}", param=where, code="invalid_value") from None
    request = create.chat_request()
    try:
        check_routable(
            draft_job(owner, create, request), get_catalog(), owner_budget(session, owner), request
        )
    except ApiError as exc:
        exc.param = _FORM_NAMES.get(exc.param or "", exc.param)
        raise
    return create


# A job's field and the form field that sets it for every document, where they differ.
_FORM_NAMES = {"max_cost_usd": "max_cost_per_document_usd"}


def _metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ApiError(422, "metadata must be a JSON object", param="metadata", code="invalid_value")
    check_metadata(value)
    return value


def _find(session: SessionDep, owner: ApiKey, batch_id: str) -> Batch:
    batch = batches.owned(session, Batch, batch_id, owner.id)
    if batch is None or batch.kind != BatchKind.NATIVE:
        raise ApiError(
            404, f"no document batch {batch_id!r} for this API key", param="batch_id", code="batch_not_found"
        )
    return batch  # type: ignore[no-any-return]


def _public(session: SessionDep, batch: Batch, request: Request) -> DocumentBatch:
    counts = batches.batch_counts(session, batch)
    eta = batches.eta_seconds(batch, counts, datetime.now(UTC))
    return DocumentBatch.of(batch, counts, eta, _base_url(request), EconomyView.read(session, batch))


@router.post(
    "",
    status_code=202,
    response_model=DocumentBatch,
    responses={422: {"description": "Bad options, no documents, or nothing can serve the prompt"}},
)
def create_document_batch(
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    idem: Annotated[Idempotency | None, idempotent("POST /v1/document_batches")],
    prompt: Annotated[
        str | None,
        Form(description="mode=generate: the template; {document} is replaced by each document's text."),
    ] = None,
    files: Annotated[
        list[UploadFile] | None, File(description="Documents, one per file (UTF-8 text).")
    ] = None,
    jsonl: Annotated[
        UploadFile | None, File(description='JSONL: {"id", "text", "metadata"} per line.')
    ] = None,
    model: Annotated[str | None, Form(description="A catalog model or deployment.")] = None,
    strategy: Annotated[str | None, Form(description="cost, quality, balanced, performance, ...")] = None,
    min_quality: Annotated[float | None, Form()] = None,
    max_cost_usd: Annotated[
        Decimal | None,
        Form(
            gt=0,
            le=MAX_USD,
            description="The most the whole batch may spend; documents past it fail with budget_exceeded.",
        ),
    ] = None,
    max_cost_per_document_usd: Annotated[
        Decimal | None, Form(description="Per-document ceiling on the estimated cost (routing).")
    ] = None,
    max_tokens: Annotated[int | None, Form()] = None,
    deadline_s: Annotated[
        float | None, Form(description="Give up on a document this long after submit.")
    ] = None,
    on_too_long: Annotated[
        Literal["split", "reject"],
        Form(description="A document over its model's context: split (map, then reduce) or reject."),
    ] = "split",
    webhook_url: Annotated[str | None, Form(description="POSTed once when the batch ends.")] = None,
    metadata: Annotated[str | None, Form(description="A JSON object kept with the batch.")] = None,
    mode: Annotated[
        Literal["generate", "embed"],
        Form(description="generate (a prompt over each document) or embed (chunks' vectors)."),
    ] = "generate",
    chunk_tokens: Annotated[
        int | None, Form(description="mode=embed: the most tokens a chunk has (default 512, or less).")
    ] = None,
    overlap_tokens: Annotated[
        int | None, Form(description="mode=embed: tokens a chunk repeats of the one before (default 1/8).")
    ] = None,
    dimensions: Annotated[
        int | None, Form(description="mode=embed: shorter vectors, where the model can.")
    ] = None,
    input_type: Annotated[
        str | None, Form(description="mode=embed: search_document (default for retrieval), clustering, ...")
    ] = None,
    delivery: Annotated[
        EconomyMode,
        Form(
            description="Economy mode: `auto` sends documents through a provider's own batch API, at its "
            "batch prices, when a deadline_s is given that allows it and it saves enough; `economy` "
            "wherever it saves anything (within deadline_s, if given); `online` never."
        ),
    ] = EconomyMode.AUTO,
) -> DocumentBatch:
    """Accept a batch: every document becomes a job (or map jobs and a reduce), dispatched in
    windows; with mode=embed, its chunks are packed into embedding calls instead."""
    if not files and jsonl is None:
        raise ApiError(
            422,
            "send documents as 'files' (one per file) or as one 'jsonl' file",
            param="files",
            code="no_documents",
        )
    if files and jsonl is not None:
        raise ApiError(422, "send either 'files' or 'jsonl', not both", param="jsonl", code="invalid_value")
    check_webhook_url(webhook_url, "webhook_url")
    require_budget_left(session, owner)
    if mode == "embed":  # issue 14: chunks and vectors (api/embed_batches.py)
        embedding = embed_options(
            get_catalog(),
            model=model,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap_tokens,
            dimensions=dimensions,
            input_type=input_type,
            deadline_s=deadline_s,
        )
        batch = _embed_batch(session, owner, embedding, files, jsonl, max_cost_usd, webhook_url, metadata)
        created = _public(session, batch, request)
        if idem is not None:
            idem.save(session, 202, created, batch.id)
        session.commit()
        send_batch_check(batch.id)  # a batch whose every document failed on intake finalizes now
        return created
    if prompt is None:
        raise ApiError(
            422,
            "prompt is required (or mode=embed to embed the documents)",
            param="prompt",
            code="missing_prompt",
        )
    create = _routing_options(
        session,
        owner,
        prompt,
        {
            "model": model,
            "strategy": strategy,
            "min_quality": min_quality,
            "max_cost_usd": max_cost_per_document_usd,
            "max_tokens": max_tokens,
            "deadline_s": deadline_s,
        },
    )
    catalog = get_catalog()
    decision_strategy = create.strategy or ("manual" if model else "cost")
    options = NativeOptions(
        prompt=prompt,
        model=model,
        strategy=decision_strategy,
        routing=create.routing_options(),
        max_tokens=max_tokens,
        deadline_s=deadline_s,
        on_too_long=on_too_long,
        window=window_for(catalog, model, max_tokens),
    )
    now = datetime.now(UTC)
    batch = Batch(
        owner_id=owner.id,
        kind=BatchKind.NATIVE,
        status=BatchStatus.IN_PROGRESS,
        prompt=prompt,
        model=model,
        strategy=decision_strategy,
        routing=create.routing_options(),
        options={
            "on_too_long": on_too_long,
            "max_tokens": max_tokens,
            "deadline_s": deadline_s,
            "delivery": delivery.value,
            **({"max_cost_usd": str(max_cost_usd)} if max_cost_usd is not None else {}),
        },
        webhook_url=webhook_url,
        batch_metadata=_metadata(metadata),
        created_at=now,
        in_progress_at=now,
        # A deadline is the batch's too: past it, what has not run is cancelled as expired.
        expires_at=now + timedelta(seconds=deadline_s) if deadline_s else None,
    )
    session.add(batch)
    session.flush()
    set_batch_budget(session, owner, batch.id, max_cost_usd)
    intake = Intake(batch, batches.BulkJobWriter(session))
    if jsonl is not None:
        add_jsonl_documents(intake, options, limited_lines(jsonl.file, "jsonl"))
    for number, upload in enumerate(files or [], 1):
        _add_file(intake, options, number, upload)
    intake.writer.flush()
    if intake.total == 0:
        session.rollback()
        raise ApiError(
            422, "the upload holds no documents", param="jsonl" if jsonl else "files", code="no_documents"
        )
    batch.total = intake.total
    batch.errors = intake.errors or None
    created = _public(session, batch, request)
    if idem is not None:  # recorded with the batch, in its transaction (api/idempotency.py)
        idem.save(session, 202, created, batch.id)
    session.commit()
    send_dispatch(intake.writer.to_dispatch, priority=Priority.BATCH)
    send_batch_check(batch.id)  # a batch whose every line failed on intake finalizes now
    return created


def _embed_batch(
    session: SessionDep,
    owner: ApiKey,
    options: EmbedOptions,
    files: list[UploadFile] | None,
    jsonl: UploadFile | None,
    max_cost_usd: Decimal | None,
    webhook_url: str | None,
    metadata: str | None,
) -> Batch:
    """An embed-mode batch with its jobs, flushed (not committed)."""
    now = datetime.now(UTC)
    batch = Batch(
        owner_id=owner.id,
        kind=BatchKind.NATIVE,
        status=BatchStatus.IN_PROGRESS,
        model=options.model_name,
        strategy=SAME_MODEL,
        options=options.as_json() | ({"max_cost_usd": str(max_cost_usd)} if max_cost_usd is not None else {}),
        webhook_url=webhook_url,
        batch_metadata=_metadata(metadata),
        created_at=now,
        in_progress_at=now,
    )
    session.add(batch)
    session.flush()
    set_batch_budget(session, owner, batch.id, max_cost_usd)
    intake = EmbedIntake(batch, batches.BulkJobWriter(session), options, get_catalog())
    if jsonl is not None:
        intake.add_jsonl(limited_lines(jsonl.file, "jsonl"))
    for number, upload in enumerate(files or [], 1):
        intake.add_file(number, upload.filename or f"file-{number}", upload.file)
    intake.close()
    if intake.total == 0:
        session.rollback()
        raise ApiError(
            422, "the upload holds no documents", param="jsonl" if jsonl else "files", code="no_documents"
        )
    batch.total = intake.total
    batch.errors = intake.errors or None
    batch.options = {**batch.options, **intake.summary()}
    return batch


def _add_file(intake: Intake, options: NativeOptions, number: int, upload: UploadFile) -> None:
    name = upload.filename or f"file-{number}"
    try:
        text = upload.file.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        intake.fail_line(number, name, "invalid_line", f"{name} is not UTF-8 text: {exc}")
        return
    if not text.strip():
        intake.fail_line(number, name, "invalid_line", f"{name} is empty")
        return
    add_document(intake, options, number, name, text, {"filename": name})


@router.get("", response_model=DocumentBatchList)
def list_document_batches(
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    after: Annotated[str | None, Query(description="The last id of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DocumentBatchList:
    """Newest first."""
    rows = batches.batches_page(session, owner.id, BatchKind.NATIVE, after, limit)
    return DocumentBatchList(
        data=[_public(session, b, request) for b in rows[:limit]], has_more=len(rows) > limit
    )


@router.get("/{batch_id}", response_model=DocumentBatch, responses={404: {"description": "No such batch"}})
def read_document_batch(
    batch_id: str, request: Request, session: SessionDep, owner: OwnerDep
) -> DocumentBatch:
    """Counts by status, tokens and cost so far, and an ETA."""
    return _public(session, _find(session, owner, batch_id), request)


@router.post(
    "/{batch_id}/cancel", response_model=DocumentBatch, responses={404: {"description": "No such batch"}}
)
def cancel_document_batch(
    batch_id: str, request: Request, session: SessionDep, owner: OwnerDep
) -> DocumentBatch:
    """Documents not yet sent never are; calls in flight finish (and are billed). Ends `cancelled`."""
    batch = _find(session, owner, batch_id)
    if batches.cancel_batch(session, batch, datetime.now(UTC)):
        session.commit()
        batches.close_cancelled_attempts(session, batch.id, datetime.now(UTC))
        session.commit()
        send_batch_check(batch.id)
    session.refresh(batch)
    return _public(session, batch, request)


def _jsonl(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, default=str) + "\n"


@router.get(
    "/{batch_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One DocumentRow a line (jsonl), or CSV with a header row; an embed-mode "
            "batch: one ChunkRow a line, or (format=npy) its vectors as a NumPy float32 matrix",
            "content": {
                **streamed(
                    "application/x-ndjson",
                    "rows",
                    {"anyOf": [schema_ref(DocumentRow), schema_ref(ChunkRow)]},
                ),
                **streamed("text/csv", "id,line,status,provider,model,... one row per document"),
                **streamed("application/octet-stream", ".npy: row i is line i of the jsonl"),
            },
        },
        404: {"description": "No such document batch for this key"},
    },
)
def document_results(
    batch_id: str,
    session: StreamSessionDep,
    owner: OwnerDep,
    format: Annotated[
        Literal["jsonl", "csv", "npy"],
        Query(description="jsonl (one object a line) or csv; an embed-mode batch: jsonl or npy (vectors)."),
    ] = "jsonl",
    status: Annotated[
        Literal["queued", "dispatched", "running", "succeeded", "failed", "cancelled"] | None,
        Query(description="Only documents in this status, e.g. failed."),
    ] = None,
    include_text: Annotated[bool, Query(description="mode=embed: each chunk's text too.")] = False,
    include_vectors: Annotated[bool, Query(description="mode=embed: each chunk's embedding.")] = True,
    encoding_format: Annotated[
        EncodingFormat, Query(description="mode=embed: vectors as floats or base64 float32s.")
    ] = "float",
) -> StreamingResponse:
    """Every document's result so far, in input order, streamed; an embed-mode batch's, every chunk's."""
    batch = _find(session, owner, batch_id)
    if is_embed_mode(batch):  # issue 14: chunks and their vectors (api/routes/embed_results.py)
        return embed_results(
            batch,
            format,
            include_text=include_text,
            include_vectors=include_vectors,
            encoding=encoding_format,
            status=status,
        )
    if format == "npy":
        raise ApiError(400, "npy is for an embed-mode batch's vectors", param="format", code="invalid_value")
    if format == "csv":
        return started_stream(
            batch_results.csv_lines(document_rows(batch.id, status=status)),
            media_type="text/csv",
            headers={"Content-Disposition": attachment(f"{batch.id}.csv")},
        )
    return started_stream(_jsonl(document_rows(batch.id, status=status)), media_type="application/x-ndjson")


@router.get(
    "/{batch_id}/documents/{doc_id}",
    response_model=DocumentDetail | EmbeddedDocument,
    responses={404: {"description": "No such batch or document"}},
)
def read_document(batch_id: str, doc_id: str, session: SessionDep, owner: OwnerDep) -> dict[str, Any]:
    """One document's result; a split document lists its parts too; mode=embed: its usage and cost."""
    batch = _find(session, owner, batch_id)
    if is_embed_mode(batch):
        return document_summary(session, batch, doc_id)
    jobs = session.scalars(
        select(Job).where(Job.batch_id == batch.id, Job.custom_id == doc_id).order_by(Job.part)
    ).all()
    final = next((j for j in jobs if j.stage != "map"), None)
    if final is None:
        raise ApiError(
            404, f"no document {doc_id!r} in batch {batch_id}", param="doc_id", code="document_not_found"
        )
    parts = [j for j in jobs if j.stage == "map"]
    row = batch_results.document_row(final, batches.map_totals(session, batch.id, doc_id).get(doc_id))
    row["parts_detail"] = [
        {
            "part": p.part,
            "status": p.status,
            "model": p.model,
            "input_tokens": p.input_tokens,
            "output_tokens": p.output_tokens,
            "cost_usd": str(p.cost_usd),
            "result": p.result_text,
            "error": p.error_message,
        }
        for p in parts
    ]
    return row
