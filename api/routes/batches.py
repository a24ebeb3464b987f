"""/v1/batches, OpenAI-compatible: the official `openai` SDK's batch calls work unchanged.

Every line of the input file becomes a job, routed like any other (`model` may be a
routing alias); a malformed line fails alone, with its line number, into the error file.
Lines of a `/v1/embeddings` batch are packed, whole, into embedding calls instead
(`api/embedding_batch_lines.py`).
The batch object, its status values and request_counts are OpenAI's; `cancelling` lasts
until calls already in flight finish; output and error lines carry each custom_id. The 24h
completion window is a deadline economy mode may use: lines may go through a provider's own
batch API at its batch prices (`delivery`, an llmqueue extension; see workers/economy_feeder.py),
and the batch object lists those provider batches and which way its jobs went.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.batch_intake import Intake, add_openai_lines
from api.budget_checks import require_budget_left, set_batch_budget
from api.deps import OwnerDep, SessionDep
from api.embedding_batch_lines import add_embedding_lines
from api.errors import ApiError
from api.idempotency import Idempotency, idempotent
from api.limits import check_metadata, check_webhook_url
from api.routes.files import find_file
from api.schemas.batches import BatchList, BatchObject, EconomyView
from api.schemas.openai_compat import BatchCreate
from core.settings import get_settings
from jobstore import batches
from jobstore.batch_models import Batch, BatchKind, BatchStatus
from jobstore.batches import EMBEDDINGS_ENDPOINT
from routing.catalog import get_catalog
from workers.messages import send_batch_check, send_dispatch
from workers.queues import Priority

router = APIRouter(prefix="/v1/batches", tags=["batches (OpenAI-compatible)"])
ENDPOINTS = ("/v1/chat/completions", EMBEDDINGS_ENDPOINT)
WINDOWS = ("24h",)  # how long it lasts is a setting (batch_completion_window_s), short in tests


def _find(session: SessionDep, owner_id: str, batch_id: str) -> Batch:
    batch = batches.owned(session, Batch, batch_id, owner_id)
    if batch is None or batch.kind != BatchKind.OPENAI:
        raise ApiError(
            404, f"no batch {batch_id!r} for this API key", param="batch_id", code="batch_not_found"
        )
    return batch  # type: ignore[no-any-return]


def _public(session: SessionDep, batch: Batch) -> BatchObject:
    return BatchObject.of(batch, batches.batch_counts(session, batch), EconomyView.read(session, batch))


@router.post(
    "",
    response_model=BatchObject,
    responses={
        400: {"description": "Unknown endpoint or window, or an unusable input file"},
        404: {"description": "No such input file"},
    },
)
def create_batch(
    body: BatchCreate,
    session: SessionDep,
    owner: OwnerDep,
    idem: Annotated[Idempotency | None, idempotent("POST /v1/batches")],
) -> BatchObject:
    """Read the input file a line at a time into jobs, commit, and dispatch them in windows.
    `max_cost_usd` (an llmqueue extension) caps what the whole batch may spend."""
    if body.endpoint not in ENDPOINTS:
        raise ApiError(
            400, f"endpoint must be one of {', '.join(ENDPOINTS)}", param="endpoint", code="invalid_value"
        )
    if body.completion_window not in WINDOWS:
        raise ApiError(
            400,
            f"completion_window must be one of {', '.join(WINDOWS)}",
            param="completion_window",
            code="invalid_value",
        )
    check_webhook_url(body.webhook_url, "webhook_url")
    check_metadata(body.metadata)
    source = find_file(session, owner.id, body.input_file_id)
    if source.purpose != "batch":
        raise ApiError(
            400,
            f"file {source.id} has purpose {source.purpose!r}, not 'batch'",
            param="input_file_id",
            code="invalid_value",
        )
    require_budget_left(session, owner)
    now = datetime.now(UTC)
    batch = Batch(
        owner_id=owner.id,
        kind=BatchKind.OPENAI,
        status=BatchStatus.IN_PROGRESS,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        input_file_id=source.id,
        webhook_url=body.webhook_url,
        batch_metadata=dict(body.metadata or {}),
        created_at=now,
        in_progress_at=now,
        expires_at=now + timedelta(seconds=get_settings().batch_completion_window_s),
        options={
            "delivery": body.delivery.value,
            **({"max_cost_usd": str(body.max_cost_usd)} if body.max_cost_usd is not None else {}),
        },
    )
    session.add(batch)
    session.flush()
    set_batch_budget(session, owner, batch.id, body.max_cost_usd)
    intake = Intake(batch, batches.BulkJobWriter(session))
    lines = batches.file_lines(session, source.id)
    if body.endpoint == EMBEDDINGS_ENDPOINT:  # issue 14: lines packed into embedding calls
        add_embedding_lines(intake, get_catalog(), lines)
    else:
        add_openai_lines(intake, get_catalog(), body.endpoint, lines)
    intake.writer.flush()
    if intake.total == 0:
        session.rollback()
        raise ApiError(400, f"file {source.id} holds no requests", param="input_file_id", code="empty_file")
    batch.total = intake.total
    batch.errors = intake.errors or None
    created = _public(session, batch)
    if idem is not None:  # recorded with the batch, in its transaction (api/idempotency.py)
        idem.save(session, 200, created, batch.id)
    session.commit()
    send_dispatch(intake.writer.to_dispatch, priority=Priority.BATCH)
    send_batch_check(batch.id)
    return created


@router.get("/{batch_id}", response_model=BatchObject, responses={404: {"description": "No such batch"}})
def read_batch(batch_id: str, session: SessionDep, owner: OwnerDep) -> BatchObject:
    return _public(session, _find(session, owner.id, batch_id))


@router.post(
    "/{batch_id}/cancel", response_model=BatchObject, responses={404: {"description": "No such batch"}}
)
def cancel_batch(batch_id: str, session: SessionDep, owner: OwnerDep) -> BatchObject:
    """`cancelling` until calls in flight finish, then `cancelled`, with their output."""
    batch = _find(session, owner.id, batch_id)
    if batches.cancel_batch(session, batch, datetime.now(UTC)):
        session.commit()
        batches.close_cancelled_attempts(session, batch.id, datetime.now(UTC))
        session.commit()
        send_batch_check(batch.id)
    session.refresh(batch)
    return _public(session, batch)


@router.get("", response_model=BatchList)
def list_batches(
    session: SessionDep,
    owner: OwnerDep,
    after: Annotated[str | None, Query(description="A cursor: the last id of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BatchList:
    """Newest first, with OpenAI's cursor pagination."""
    rows = batches.batches_page(session, owner.id, BatchKind.OPENAI, after, limit)
    page = [_public(session, b) for b in rows[:limit]]
    return BatchList(
        data=page,
        first_id=page[0].id if page else None,
        last_id=page[-1].id if page else None,
        has_more=len(rows) > limit,
    )
