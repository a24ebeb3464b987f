"""Server-Sent Events for a job: text deltas as the worker receives them, then `done`.

Deltas come from the job's Redis stream (see `workers/streams.py`), read from its start so
a late client gets what was already produced, then the rest. Completion is taken from
Postgres, looked at when the worker says it is done, when the stream is idle, and at least
every few seconds: when the job has ended, the remaining deltas are drained and `done`
carries the stored result, so the streamed text and the stored text are the same. Without
Redis, or for a job not submitted with `stream: true`, the whole text arrives as one delta
at the end.

When a provider call that already streamed text is retried or failed over, the next call
starts its text again: the client gets `reset` and should discard the text it has so far.

    event: delta   data: {"text": "..."}
    event: reset   data: {"reason": "the provider call was retried; text restarts"}
    event: done    data: {"status": "succeeded", "result": "...", "error": null, ...}
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aredis
from fastapi.responses import StreamingResponse

from core.redis import async_redis
from jobstore.db import session_factory
from jobstore.models import ENDED_JOB_STATUSES, Job
from workers.streams import stream_key

POLL_S = 0.5
DB_CHECK_EVERY_S = 2.0  # look at Postgres this often even while deltas keep coming
READ_COUNT = 500
RESET_REASON = "the provider call was retried; text restarts"


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


@dataclass
class _Cursor:
    """Where a client is in the job's stream and what it has been sent."""

    last_id: str = "0-0"
    call_id: str | None = None
    sent_text: bool = False
    saw_done: bool = False

    def events(self, rows: list[tuple[str, dict[str, str]]]) -> Iterator[bytes]:
        for entry_id, fields in rows:
            self.last_id = entry_id
            kind = fields.get("event")
            if kind == "call":
                if self.call_id is not None and fields.get("data") != self.call_id and self.sent_text:
                    self.sent_text = False
                    yield _sse("reset", {"reason": RESET_REASON})
                self.call_id = fields.get("data")
            elif kind == "delta":
                self.sent_text = True
                yield _sse("delta", {"text": fields.get("data", "")})
            elif kind == "done":
                self.saw_done = True


async def _read(
    client: aredis.Redis, key: str, cursor: _Cursor, block_ms: int | None
) -> tuple[bool, list[bytes]]:
    """(whether any entry was read, the SSE events those entries make)."""
    found = await client.xread({key: cursor.last_id}, block=block_ms, count=READ_COUNT)
    entries = cast(list[Any], found or [])  # RESP2: [[key, [(id, fields), ...]], ...]
    rows: list[tuple[str, dict[str, str]]] = [row for _, stream_rows in entries for row in stream_rows]
    return bool(rows), list(cursor.events(rows))


async def _events(job_id: str) -> AsyncIterator[bytes]:
    client = async_redis()
    key = stream_key(job_id)
    cursor = _Cursor()
    checked_at = 0.0
    while True:
        idle = True
        if client is not None:
            got, events = await _read(client, key, cursor, int(POLL_S * 1000))
            idle = not got
            for event in events:
                yield event
        else:
            await asyncio.sleep(POLL_S)
        if not (idle or cursor.saw_done or time.monotonic() - checked_at >= DB_CHECK_EVERY_S):
            continue
        checked_at = time.monotonic()
        final = await asyncio.to_thread(_final_state, job_id)
        if final is None:
            continue
        while client is not None:  # drain what was written between the read and the commit
            got, events = await _read(client, key, cursor, None)
            if not got:
                break
            for event in events:
                yield event
        if not cursor.sent_text and final["result"]:
            yield _sse("delta", {"text": final["result"]})
        yield _sse("done", final)
        return


def job_event_stream(job_id: str) -> StreamingResponse:
    return StreamingResponse(
        _events(job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
