"""POST /v1/chat/completions, OpenAI-compatible: a job submitted and waited for.

The official SDK works unchanged with base_url pointing here. `model` names a catalog model
or deployment, or a routing alias (auto, cost, quality, balanced, performance). The job is
durable like any other (it shows in /v1/jobs, with its cost); the request waits for it
without holding a database connection, woken when the job ends (`api/job_events.py`). With
`stream: true` the answer streams as OpenAI `chat.completion.chunk` events, read from the
job's Redis stream (`workers/streams.py`).

Once the job is committed the answer is never a 5xx (a retry by the SDK would make a second
job): the answer, or a 400 for a request the provider refused, or a 424 when every
deployment failed, each with `x-should-retry: false`; and if the job has not ended after
WAIT_LIMIT_S, under the SDKs' own 600 s timeout, a 408 saying where to find it (retried by
the SDK only when the request carried an Idempotency-Key, whose replay waits on the same job).

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
from api.errors import ApiError, error_body
from api.idempotency import HEADER, Idempotency, idempotent
from api.job_events import ended_jobs, stream_hub
from api.job_intake import store_and_send
from api.limits import check_messages, check_metadata
from api.openapi import json_body, streamed
from api.schemas.jobs import JobCreate
from api.schemas.openai_compat import ChatCompletion, ChatCompletionCreate, ModelNotFound
from jobstore import batch_results
from jobstore.models import ApiKey, IdempotencyRecord, Job, JobStatus
from routing.catalog import get_catalog

router = APIRouter(prefix="/v1/chat", tags=["chat (OpenAI-compatible)"])
WAIT_LIMIT_S = 540.0  # under the openai SDK's own default timeout (600 s)


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
    record: dict[str, str] = store_and_send(
        owner, create, idem, lambda job: {"object": "chat.completion.job", "job_id": job.id}
    )
    return record["job_id"]


async def _wait(job_id: str, *, retry_safe: bool) -> Job:
    """The job once it has ended; a 408 (never a 5xx) when it takes longer than WAIT_LIMIT_S."""
    job = await ended_jobs().wait(job_id, WAIT_LIMIT_S)
    if job is not None:
        return job
    raise ApiError(
        408,
        f"job {job_id} did not finish within {WAIT_LIMIT_S:.0f} s; it goes on: GET /v1/jobs/{job_id}"
        + ("; a retry with the same Idempotency-Key waits for it again" if retry_safe else ""),
        code="timeout",
        headers={"x-should-retry": "true" if retry_safe else "false"},
    )


def _failure(job: Job) -> ApiError:
    """A job that ended without an answer: the request's fault is a 400; otherwise every
    deployment failed, a 424 (not a 5xx: retrying would only make a second job)."""
    status = batch_results.error_status(job)
    error = batch_results.job_error(job)
    return ApiError(
        400 if status in (400, 499) else 424,
        f"{error['message']} (job {job.id})",
        code=error["code"],
        headers={"x-should-retry": "false"},
    )


async def _replay(record: IdempotencyRecord, request: Request) -> Response:
    """A retry with the same Idempotency-Key and body: the answer of the job the first made."""
    if record.resource_id is None:
        raise ApiError(409, "this Idempotency-Key made no job", param=HEADER, code="idempotency_conflict")
    return await _respond(record.resource_id, _parse(await request.json()))


@router.post(
    "/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletion,
            "description": "The answer; with `stream: true`, `chat.completion.chunk` events instead.",
            "content": streamed(
                "text/event-stream", "`data: <chat.completion.chunk>` events, then `data: [DONE]`"
            ),
        },
        400: {"description": "Invalid body, or the job failed on the request itself"},
        404: {"description": "`model` names no catalog model, deployment or routing alias"},
        408: {"description": "The job did not end within 540 s; it goes on (GET /v1/jobs/{id})"},
        424: {"description": "Every deployment tried failed; the job's error says why"},
    },
    openapi_extra=json_body(ChatCompletionCreate),
)
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
    return await _respond(job_id, completion, retry_safe=idem is not None)


async def _respond(job_id: str, completion: ChatCompletionCreate, *, retry_safe: bool = True) -> Response:
    """The answer to a completion whose job is `job_id`: streamed, or waited for."""
    if completion.stream:
        usage = completion.stream_options is not None and completion.stream_options.include_usage
        return StreamingResponse(
            _chunks(job_id, usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    job = await _wait(job_id, retry_safe=retry_safe)
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
    """Text deltas from the job's Redis stream (the process's shared reader); None marks a
    restarted call; ends at the worker's `done` entry or when the job has ended."""
    calls = 0
    ended = asyncio.ensure_future(ended_jobs().wait(job_id, WAIT_LIMIT_S))
    sub = None
    next_entry: asyncio.Future[tuple[str, dict[str, str]]] | None = None
    try:
        sub = await stream_hub().subscribe(job_id)
        while sub is not None:
            next_entry = asyncio.ensure_future(sub.next())
            waiting: set[asyncio.Future[Any]] = {next_entry, ended}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_entry not in done:  # the job ended: what came before the end, then stop
                next_entry.cancel()
                entries = await sub.rest()
            else:
                entries = [next_entry.result()]
            for _, fields in entries:
                event = fields.get("event")
                if event == "call":
                    calls += 1
                    if calls > 1:
                        yield None
                elif event == "delta":
                    yield fields.get("data", "")
                elif event == "done":
                    return
            if next_entry not in done:
                return
    finally:
        ended.cancel()
        if next_entry is not None:
            next_entry.cancel()
        if sub is not None:
            sub.close()


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
    try:
        job = await _wait(job_id, retry_safe=False)
    except ApiError as exc:
        yield _data(error_body(exc.status, exc.message, code=exc.code))
        return
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
