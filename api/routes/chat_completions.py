"""POST /v1/chat/completions, OpenAI-compatible: a job submitted and waited for.

The official SDK works unchanged with base_url pointing here. `model` names a catalog model
or deployment, or a routing alias (auto, cost, quality, balanced, performance). The job is
durable like any other (it shows in /v1/jobs, with its cost); the request waits for it by
polling Postgres with a growing interval. With `stream: true` the answer streams as OpenAI
`chat.completion.chunk` events, read from the job's Redis stream (`workers/streams.py`).

A provider call that had streamed text and was then retried starts its text over; deltas
already sent cannot be taken back, so later deltas are held and the stored answer's
remainder is sent at the end when it continues what was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from api.deps import OwnerDep
from api.dispatch_buffer import dispatch_buffer
from api.errors import ApiError, error_body
from api.idempotency import HEADER, Idempotency, idempotent
from api.job_intake import store_job
from api.limits import check_messages, check_metadata
from api.schemas.jobs import JobCreate
from api.schemas.openai_compat import ChatCompletionCreate, ModelNotFound
from core.redis import async_redis
from jobstore import batch_results
from jobstore.db import session_factory, transaction
from jobstore.models import ENDED_JOB_STATUSES, ApiKey, IdempotencyRecord, Job, JobStatus
from routing.catalog import get_catalog
from workers.streams import stream_key

router = APIRouter(prefix="/v1/chat", tags=["chat (OpenAI-compatible)"])
WAIT_LIMIT_S = 600.0  # the openai SDK's own default timeout
FIRST_POLL_S, MAX_POLL_S = 0.02, 0.25


def _parse(body: Any) -> ChatCompletionCreate:
    try:
        return ChatCompletionCreate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}", param=where, code="invalid_value") from None


def _submit(owner: ApiKey, create: JobCreate, idem: Idempotency | None = None) -> str:
    """Validate, store, commit, then enqueue: the same path as POST /v1/jobs (through the
    dispatch buffer, which the sweeper backs if the process dies before it sends)."""
    with transaction() as session:
        job, _ = store_job(session, owner, create, idempotency_key=idem.key if idem else None)
        job_id = job.id
        if idem is not None:  # idempotency: the job is recorded in its own transaction
            idem.save(session, 202, {"object": "chat.completion.job", "job_id": job_id}, job_id)
    dispatch_buffer().add(job_id)
    return job_id


def _load(job_id: str) -> Job | None:
    with session_factory()() as session:
        job = session.get(Job, job_id)
        if job is not None:
            session.expunge(job)
        return job


async def _wait(job_id: str) -> Job:
    deadline = time.monotonic() + WAIT_LIMIT_S
    pause = FIRST_POLL_S
    while True:
        job = await asyncio.to_thread(_load, job_id)
        if job is not None and job.status in ENDED_JOB_STATUSES:
            return job
        if time.monotonic() > deadline:
            raise ApiError(
                504,
                f"job {job_id} did not finish within {WAIT_LIMIT_S:.0f} s; it goes on: GET /v1/jobs/{job_id}",
                code="timeout",
            )
        await asyncio.sleep(pause)
        pause = min(MAX_POLL_S, pause * 1.5)


def _failure(job: Job) -> ApiError:
    status = batch_results.error_status(job)
    error = batch_results.job_error(job)
    return ApiError(
        400 if status == 499 else status, f"{error['message']} (job {job.id})", code=error["code"]
    )


async def _replay(record: IdempotencyRecord, request: Request) -> Response:
    """A retry with the same Idempotency-Key and body: the answer of the job the first made."""
    if record.resource_id is None:
        raise ApiError(409, "this Idempotency-Key made no job", param=HEADER, code="idempotency_conflict")
    return await _respond(record.resource_id, _parse(await request.json()))


@router.post("/completions", responses={200: {"content": {"text/event-stream": {}}}})
async def chat_completions(
    request: Request,
    owner: OwnerDep,
    idem: Annotated[Idempotency | None, idempotent("POST /v1/chat/completions", _replay)],
) -> Any:
    """OpenAI's chat completion, answered by whichever deployment routing picks."""
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None
    completion = _parse(body)
    check_messages(completion.messages)  # the request limits (api/limits.py)
    check_metadata(completion.metadata)
    try:
        create = completion.to_job(get_catalog())
    except ModelNotFound as exc:
        raise ApiError(404, str(exc), param="model", code="model_not_found") from None
    job_id = await asyncio.to_thread(_submit, owner, create, idem)
    return await _respond(job_id, completion)


async def _respond(job_id: str, completion: ChatCompletionCreate) -> Response:
    """The answer to a completion whose job is `job_id`: streamed, or waited for."""
    if completion.stream:
        usage = completion.stream_options is not None and completion.stream_options.include_usage
        return StreamingResponse(
            _chunks(job_id, usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    job = await _wait(job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise _failure(job)
    return JSONResponse(batch_results.chat_completion(job))


# ---------------------------------------------------------------- streaming


def _chunk(job_id: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": f"chatcmpl-{job_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    return _data(body)


def _data(body: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


async def _deltas(job_id: str) -> AsyncIterator[str | None]:
    """Text deltas from the job's Redis stream; None marks a restarted call; ends at `done`."""
    client = async_redis()
    if client is None:
        return
    key, last, calls = stream_key(job_id), "0-0", 0
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline:
        entries: Any = await client.xread({key: last}, block=500, count=500)
        for _, rows in entries or []:
            for entry_id, fields in rows:
                last = entry_id
                event = fields.get("event")
                if event == "call":
                    calls += 1
                    if calls > 1:
                        yield None
                elif event == "delta":
                    yield fields.get("data", "")
                elif event == "done":
                    return
        job = await asyncio.to_thread(_load, job_id)
        if job is None or job.status in ENDED_JOB_STATUSES:
            return


async def _chunks(job_id: str, include_usage: bool) -> AsyncIterator[bytes]:
    sent, held = "", False
    model = ""
    yield _chunk(job_id, model, {"role": "assistant", "content": ""})
    async for delta in _deltas(job_id):
        if delta is None:
            held = True  # a retried call restarts its text: hold it and settle at the end
        elif not held and delta:
            sent += delta
            yield _chunk(job_id, model, {"content": delta})
    job = await _wait(job_id)
    if job.status != JobStatus.SUCCEEDED:
        yield _data(
            error_body(
                batch_results.error_status(job),
                batch_results.job_error(job)["message"],
                code=batch_results.job_error(job)["code"],
            )
        )
        return
    text = job.result_text or ""
    if text.startswith(sent) and len(text) > len(sent):
        yield _chunk(job_id, job.model or "", {"content": text[len(sent) :]})
    yield _chunk(job_id, job.model or "", {}, job.finish_reason or "stop")
    if include_usage:
        yield _data(
            {
                "id": f"chatcmpl-{job.id}",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": job.model or "",
                "choices": [],
                "usage": batch_results.usage(job),
            }
        )
    yield b"data: [DONE]\n\n"
