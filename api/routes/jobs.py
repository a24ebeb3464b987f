"""/v1/jobs: submit a generation job, read it, list, cancel and stream it."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.deps import OwnerDep, SessionDep
from api.errors import ApiError
from api.idempotency import Idempotency, idempotent
from api.job_intake import draft_job, store_and_send
from api.job_writer import job_writer
from api.limits import check_messages, check_metadata
from api.openapi import streamed
from api.schemas.embeddings import EncodingFormat, VectorPublic
from api.schemas.jobs import JobAccepted, JobCreate, JobList, JobPublic, JobRequestPublic
from api.streaming import open_job_stream
from jobstore import transitions
from jobstore.embedding_jobs import vectors_of
from jobstore.jobs import get_job
from jobstore.models import ApiKey, Job, JobKind, JobStatus
from workers.streams import publish_ended

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


DRAFT_ON_LOOP_MAX_BYTES = 32 * 1024


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    responses={
        409: {"description": "Idempotency-Key reused with a different request"},
        422: {"description": "Invalid request, unknown model, or nothing can serve it"},
    },
)
async def submit_job(
    body: JobCreate,
    request: Request,
    response: Response,
    owner: OwnerDep,
    idem: Annotated[Idempotency | None, idempotent("POST /v1/jobs")],
) -> JobAccepted:
    """Accept a job: validate it, store it, commit, then hand its id to the dispatcher.

    An async route: validation and drafting run on the event loop, and the row is stored by
    the group writer (`api/job_writer.py`), one transaction for the jobs submitted together.
    A request with an Idempotency-Key is stored on its own, its record in its transaction."""
    check_messages(body.messages)
    check_metadata(body.metadata)
    url_base = f"{base_url(request)}/v1/jobs/"
    if idem is not None:
        accepted = await run_in_threadpool(_submit_idempotent, body, owner, idem, url_base)
    else:
        chat = body.chat_request()
        # Drafting counts the prompt's tokens in Python: a large prompt is counted on the thread
        # pool, where the event loop keeps its turns, instead of stalling every other request.
        size = request.headers.get("content-length")
        if size is not None and int(size) <= DRAFT_ON_LOOP_MAX_BYTES:
            job = draft_job(owner, body, chat)
        else:
            job = await run_in_threadpool(draft_job, owner, body, chat)
        job = await job_writer().store(owner, job, chat)
        accepted = JobAccepted(id=job.id, status=job.status, url=url_base + job.id, created=True)
    response.headers["Location"] = accepted.url
    return accepted


def _submit_idempotent(body: JobCreate, owner: ApiKey, idem: Idempotency, url_base: str) -> JobAccepted:
    def accepted(job: Job) -> JobAccepted:
        return JobAccepted(id=job.id, status=job.status, url=url_base + job.id, created=True)

    answer: JobAccepted = store_and_send(owner, body, idem, accepted)
    return answer


@router.get(
    "/{job_id}", response_model=JobPublic, responses={404: {"description": "No such job for this key"}}
)
def read_job(
    job_id: str,
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    include_vectors: Annotated[
        bool, Query(description="An embedding job: include its vectors (false: usage and cost only).")
    ] = True,
    encoding_format: Annotated[
        EncodingFormat, Query(description="An embedding job's vectors as floats or base64 float32s.")
    ] = "float",
) -> JobPublic:
    job = get_job(session, job_id, owner.id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} for this API key", param="job_id", code="job_not_found")
    public = JobPublic.of(job, base_url(request))
    if job.kind == JobKind.EMBEDDING and include_vectors and job.status == JobStatus.SUCCEEDED:
        stored = vectors_of(session, [job.id])[job.id]
        public.embeddings = [VectorPublic.of(v, encoding_format) for v in stored]
    return public


@router.get("", response_model=JobList)
def list_jobs(
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    status: Annotated[
        str | None, Query(description="Only jobs in this status: queued, running, succeeded, failed, ...")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    before: Annotated[str | None, Query(description="A job id: list jobs created before it")] = None,
    model: Annotated[str | None, Query(description="Only jobs served by this model")] = None,
    provider: Annotated[str | None, Query(description="Only jobs served by this provider")] = None,
    batch_id: Annotated[str | None, Query(description="Only this batch's jobs")] = None,
) -> JobList:
    query = select(Job).where(Job.owner_id == owner.id)
    for column, value in ((Job.status, status), (Job.model, model), (Job.provider, provider)):
        if value:
            query = query.where(column == value)
    if batch_id:
        query = query.where(Job.batch_id == batch_id)
    if before:
        anchor = get_job(session, before, owner.id)
        if anchor is None:
            raise ApiError(422, f"unknown job id {before!r} in 'before'", param="before")
        query = query.where(Job.created_at < anchor.created_at)
    rows = list(session.scalars(query.order_by(Job.created_at.desc()).limit(limit + 1)))
    return JobList(
        data=[JobPublic.of(j, base_url(request)) for j in rows[:limit]], has_more=len(rows) > limit
    )


@router.get(
    "/{job_id}/request",
    response_model=JobRequestPublic,
    responses={404: {"description": "No such job for this key"}},
)
def read_job_request(job_id: str, session: SessionDep, owner: OwnerDep) -> JobRequestPublic:
    """What the job asks: its messages and generation parameters, as stored at submission."""
    job = get_job(session, job_id, owner.id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} for this API key", param="job_id", code="job_not_found")
    return JobRequestPublic(id=job.id, request=job.request, routing=job.routing)


@router.post(
    "/{job_id}/cancel", response_model=JobPublic, responses={404: {"description": "No such job for this key"}}
)
def cancel(job_id: str, request: Request, session: SessionDep, owner: OwnerDep) -> JobPublic:
    """Cancel an open job. A call already in flight finishes (and is billed) but does not revive it."""
    job = get_job(session, job_id, owner.id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} for this API key", param="job_id", code="job_not_found")
    cancelled = transitions.cancel_job(session, job_id, datetime.now(UTC))
    session.commit()
    if cancelled:
        with contextlib.suppress(Exception):  # best effort: a waiter also looks at Postgres
            publish_ended([job_id])
    session.refresh(job)
    return JobPublic.of(job, base_url(request))


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events from the start of the job",
            "content": streamed(
                "text/event-stream",
                '`event: delta` (`data: {"text": ...}`) as tokens arrive, `event: reset` when a retried '
                "call starts its text over, then one `event: done` with the stored result",
            ),
        },
        404: {"description": "No such job for this key"},
    },
)
async def stream_job(job_id: str, owner: OwnerDep) -> Response:
    """Server-Sent Events: `delta` events with text as it is generated, then one `done`. The
    job's owner is checked by the stream's first look at the job, with a session returned at
    once: a stream holds no connection."""
    return await open_job_stream(job_id, owner.id)
