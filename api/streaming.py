"""Server-Sent Events for a job: text deltas as the worker receives them, then `done`.

Deltas come from the job's Redis stream (see `workers/streams.py`), read from its start so
a late client gets what was already produced, then the rest. Completion is taken from
Postgres: when the job has ended, the remaining deltas are drained and `done` carries the
stored result, so the streamed text and the stored text are the same. Without Redis, or for
a job not submitted with `stream: true`, the whole text arrives as one delta at the end.

    event: delta   data: {"text": "..."}
    event: done    data: {"status": "succeeded", "result": "...", "error": null, ...}
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import redis.asyncio as aredis
from fastapi.responses import StreamingResponse

from jobstore.db import session_factory
from jobstore.models import ENDED_JOB_STATUSES, Job
from llmqueue.settings import get_settings
from workers.streams import stream_key

POLL_S = 0.5


@cache
def _async_redis(url: str) -> aredis.Redis:
    return aredis.Redis.from_url(url, decode_responses=True, max_connections=200)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _final_state(job_id: str) -> dict[str, Any] | None:
    with session_factory()() as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in ENDED_JOB_STATUSES:
            return None
        return {
            "status": job.status,
            "result": job.result_text,
            "finish_reason": job.finish_reason,
            "error": {"type": job.error_type, "message": job.error_message} if job.error_type else None,
            "usage": {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens},
            "cost_usd": str(job.cost_usd),
        }


async def _events(job_id: str) -> AsyncIterator[bytes]:
    settings = get_settings()
    client = _async_redis(settings.redis_url) if settings.redis_url else None
    key = stream_key(job_id)
    last_id = "0-0"
    sent_text = False
    while True:
        if client is not None:
            entries = await client.xread({key: last_id}, block=int(POLL_S * 1000), count=500)
            for _, rows in entries or []:
                for entry_id, fields in rows:
                    last_id = entry_id
                    if fields.get("event") == "delta":
                        sent_text = True
                        yield _sse("delta", {"text": fields.get("data", "")})
        else:
            await asyncio.sleep(POLL_S)
        final = await asyncio.to_thread(_final_state, job_id)
        if final is None:
            continue
        if client is not None:  # drain anything written between the read and the commit
            for _, rows in await client.xread({key: last_id}, count=10_000) or []:
                for entry_id, fields in rows:
                    last_id = entry_id
                    if fields.get("event") == "delta":
                        sent_text = True
                        yield _sse("delta", {"text": fields.get("data", "")})
        if not sent_text and final["result"]:
            yield _sse("delta", {"text": final["result"]})
        yield _sse("done", final)
        return


def job_event_stream(job_id: str) -> StreamingResponse:
    return StreamingResponse(
        _events(job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
