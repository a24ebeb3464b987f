"""/v1/embeddings, OpenAI-compatible, and /v1/embeddings/jobs, its asynchronous sibling.

`POST /v1/embeddings` is OpenAI's: the official SDK's `embeddings.create` works unchanged with
`base_url` pointing here (`dimensions`, `encoding_format` float or base64, `input` a string or
a list). Its inputs become durable jobs, one per provider call (as many inputs per call as the
model takes: 2,048 for OpenAI, 96 for Cohere, ...), routed only to deployments of the model
named, and the request waits for them as a chat completion waits for its job; they show in
`/v1/jobs` with their usage and cost. A replay with the same Idempotency-Key answers from the
same jobs.

`POST /v1/embeddings/jobs` accepts the same inputs (with ids of the caller's choosing) and
answers 202 with the jobs at once; each job's vectors are read back with it,
`GET /v1/jobs/{id}` (`include_vectors=false` leaves them out).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.budget_checks import require_budget_left
from api.deps import OwnerDep, SessionDep
from api.dispatch_buffer import dispatch_buffer
from api.embedding_intake import (
    Item,
    check_budget,
    check_dimensions,
    embedding_model,
    estimate,
    input_type_of,
    item,
    pack_all,
    plan_error,
    store_calls,
)
from api.errors import ApiError
from api.idempotency import HEADER, Idempotency, idempotent
from api.openapi import json_body

# A chat completion's wait (woken by the jobs' end events) and its answer to a failed job
# (never a 5xx once committed), reused: embeddings wait for their jobs the same way.
from api.routes.chat_completions import _failure as failure
from api.routes.chat_completions import _wait as wait_for_job
from api.schemas.embeddings import (
    EmbeddingJobAccepted,
    EmbeddingJobsAccepted,
    EmbeddingJobsCreate,
    EmbeddingsAnswer,
    EmbeddingsCreate,
    encoded,
)
from core.clock import utcnow
from jobstore.db import session_factory, transaction
from jobstore.embedding_jobs import StoredVector, vectors_of
from jobstore.models import ApiKey, IdempotencyRecord, JobStatus
from routing.catalog import get_catalog
from routing.embeddings import EmbeddingPlanError

router = APIRouter(prefix="/v1/embeddings", tags=["embeddings (OpenAI-compatible)"])
ROUTE = "POST /v1/embeddings"


def _parse(body: Any) -> EmbeddingsCreate:
    try:
        return EmbeddingsCreate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}", param=where, code="invalid_value") from None


def _texts(create: EmbeddingsCreate) -> list[str]:
    value = create.input
    if isinstance(value, str):
        return [value]
    if not value:
        raise ApiError(400, "input must hold at least one text", param="input", code="invalid_value")
    if not all(isinstance(v, str) for v in value):
        raise ApiError(
            400,
            "input: token arrays are not accepted; send the text (llmqueue counts and packs text, and "
            "most providers embed only text)",
            param="input",
            code="invalid_value",
        )
    return [str(v) for v in value]


def _input_param(single: bool) -> Any:
    return lambda input_id: "input" if single or input_id is None else f"input.{input_id}"


def _accept(owner: ApiKey, create: EmbeddingsCreate, idem: Idempotency | None) -> list[str]:
    """Check, pack, store one job per call and commit; then dispatch. Returns the jobs' ids."""
    catalog = get_catalog()
    model = embedding_model(create.model, catalog)
    check_dimensions(model, create.dimensions)
    input_type = input_type_of(create.input_type)
    texts = _texts(create)
    try:
        calls = pack_all(model, [item(str(i), text) for i, text in enumerate(texts)])
    except EmbeddingPlanError as exc:
        raise plan_error(exc, _input_param(isinstance(create.input, str))) from None
    with transaction() as session:
        require_budget_left(session, owner)
        check_budget(session, owner, estimate(model, calls))
        ids = store_calls(
            session,
            owner,
            create.model,
            calls,
            dimensions=create.dimensions,
            input_type=input_type,
            idempotency_key=idem.key if idem else None,
        )
        if idem is not None:  # recorded with the jobs, in their transaction
            idem.save(session, 200, {"object": "embedding.jobs", "job_ids": ids}, ids[0])
    buffer = dispatch_buffer()
    for job_id in ids:
        buffer.add(job_id)
    return ids


def _vectors(job_ids: list[str]) -> dict[str, list[StoredVector]]:
    with session_factory()() as session:
        return vectors_of(session, job_ids)


async def _respond(job_ids: list[str], create: EmbeddingsCreate, *, retry_safe: bool = True) -> Response:
    """OpenAI's embeddings answer, once every job has ended (the first failure, if one failed)."""
    # One after the other: the calls run in parallel anyway, and one waiter at a time keeps a
    # request of a hundred calls from holding a hundred waits.
    jobs = [await wait_for_job(job_id, retry_safe=retry_safe) for job_id in job_ids]
    failed = next((job for job in jobs if job.status != JobStatus.SUCCEEDED), None)
    if failed is not None:
        raise failure(failed)
    stored = await asyncio.to_thread(_vectors, job_ids)
    data: list[dict[str, Any]] = []
    for job in jobs:
        for vector in stored[job.id]:
            data.append(
                {
                    "object": "embedding",
                    "index": len(data),
                    "embedding": encoded(vector.blob, create.encoding_format),
                }
            )
    tokens = sum(job.input_tokens for job in jobs)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": jobs[0].model or create.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "llmqueue": {
                "job_ids": job_ids,
                "calls": len(jobs),
                "deployments": sorted({job.deployment or "" for job in jobs}),
                "cost_usd": f"{sum(job.cost_usd for job in jobs):f}",
            },
        }
    )


async def _replay(record: IdempotencyRecord, request: Request) -> Response:
    """A retry with the same Idempotency-Key and body: the answer of the jobs the first made."""
    job_ids = (record.response or {}).get("job_ids")
    if not job_ids:
        raise ApiError(409, "this Idempotency-Key made no jobs", param=HEADER, code="idempotency_conflict")
    return await _respond(list(job_ids), _parse(await request.json()))


@router.post(
    "",
    response_model=None,
    responses={
        200: {"model": EmbeddingsAnswer, "description": "The vectors, in input order, and the usage"},
        400: {"description": "Invalid body, a chat model, unsupported dimensions, an input it cannot embed"},
        404: {"description": "`model` names no catalog model or deployment"},
        408: {"description": "The jobs did not end within 540 s; they go on (GET /v1/jobs/{id})"},
        422: {"description": "The key's budget cannot cover the calls' estimate (budget_exceeded)"},
        424: {"description": "Every deployment of the model failed for a call; the job's error says why"},
    },
    openapi_extra=json_body(EmbeddingsCreate),
)
async def create_embeddings(
    request: Request,
    owner: OwnerDep,
    idem: Annotated[Idempotency | None, idempotent(ROUTE, _replay)],
) -> Response:
    """OpenAI's embeddings: the vectors of every input, in input order, with the usage."""
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    create = _parse(body)
    job_ids = await asyncio.to_thread(_accept, owner, create, idem)
    return await _respond(job_ids, create, retry_safe=idem is not None)


@router.post(
    "/jobs",
    status_code=202,
    response_model=EmbeddingJobsAccepted,
    responses={
        404: {"description": "Unknown model"},
        400: {"description": "A chat model, an input that cannot be embedded, unsupported dimensions"},
        409: {"description": "Idempotency-Key reused with a different request"},
    },
)
def submit_embedding_jobs(
    body: EmbeddingJobsCreate,
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    idem: Annotated[Idempotency | None, idempotent("POST /v1/embeddings/jobs")],
) -> EmbeddingJobsAccepted:
    """Embed without waiting: one job per provider call, each read back with its vectors at
    GET /v1/jobs/{id}. Inputs keep the ids given (or their index as id)."""
    catalog = get_catalog()
    model = embedding_model(body.model, catalog)
    check_dimensions(model, body.dimensions)
    input_type = input_type_of(body.input_type)
    items = _items(body)
    index_of = {it.input.id: i for i, it in enumerate(items)}
    try:
        calls = pack_all(model, items)
    except EmbeddingPlanError as exc:
        single = isinstance(body.input, str)
        raise plan_error(
            exc, lambda input_id: "input" if single else f"input.{index_of.get(input_id or '', 0)}"
        ) from None
    require_budget_left(session, owner)
    expected = estimate(model, calls)
    check_budget(session, owner, expected)
    deadline = utcnow() + timedelta(seconds=body.deadline_s) if body.deadline_s else None
    ids = store_calls(
        session,
        owner,
        body.model,
        calls,
        dimensions=body.dimensions,
        input_type=input_type,
        metadata=body.metadata,
        idempotency_key=idem.key if idem else None,
        deadline_at=deadline,
    )
    base = str(request.base_url).rstrip("/")
    data, first = [], 0
    for job_id, call in zip(ids, calls, strict=True):
        data.append(
            EmbeddingJobAccepted(
                id=job_id,
                status=JobStatus.QUEUED.value,
                url=f"{base}/v1/jobs/{job_id}",
                inputs=len(call.items),
                first_input=first,
            )
        )
        first += len(call.items)
    accepted = EmbeddingJobsAccepted(
        model=model.id, data=data, inputs=len(items), estimated_cost_usd=f"{expected:f}"
    )
    if idem is not None:
        idem.save(session, 202, accepted, ids[0])
    session.commit()
    buffer = dispatch_buffer()
    for job_id in ids:
        buffer.add(job_id)
    return accepted


def _items(body: EmbeddingJobsCreate) -> list[Item]:
    value = body.input
    if isinstance(value, str):
        return [item("0", value)]
    if not value:
        raise ApiError(400, "input must hold at least one text", param="input", code="invalid_value")
    return [item(v, v_text) for v, v_text in _pairs(value)]


def _pairs(value: list[Any]) -> list[tuple[str, str]]:
    return [(str(i), v) if isinstance(v, str) else (v.id, v.text) for i, v in enumerate(value)]
