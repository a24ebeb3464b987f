"""Server-Sent Events for a job: text deltas as the worker receives them, then `done`.

Deltas come from the job's Redis stream (see `workers/streams.py`), read from its start so
a late client gets what was already produced, then the rest, through the process's one
shared reader (`api/job_events.py`). The end comes as an event (the worker's `done` entry,
or the ended-jobs channel for a job that does not stream), after which the stored result is
read once from Postgres (a short session) and `done` carries it, so the streamed text and the
stored text are the same. No database connection is held while a client waits. Without
Redis, or for a job not submitted with `stream: true`, the whole text arrives as one delta
at the end. A key may hold `LLMQUEUE_MAX_STREAMS_PER_KEY` streams open in one API process,
and a stream lasts at most `LLMQUEUE_MAX_STREAM_S` (then `event: timeout`).

When a provider call that already streamed text is retried or failed over, the next call
starts its text again: the client gets `reset` and should discard the text it has so far.

    event: delta   data: {"text": "..."}
    event: reset   data: {"reason": "the provider call was retried; text restarts"}
    event: done    data: {"status": "succeeded", "result": "...", "error": null, ...}
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.errors import ApiError
from api.job_events import Begun, ended_jobs, stream_hub, stream_limits
from jobstore.models import Job

READ_COUNT = 500
RESET_REASON = "the provider call was retried; text restarts"


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


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


async def _events(job_id: str, owner_id: str, begun: Begun) -> AsyncIterator[bytes]:
    """The job's events until it ends (or the stream's time is up)."""
    _, longest = stream_limits()
    ended = asyncio.ensure_future(ended_jobs().wait(job_id, longest, begun))
    sub = None
    next_entry: asyncio.Future[tuple[str, dict[str, str]]] | None = None
    cursor = _Cursor()
    try:
        sub = await stream_hub().subscribe(job_id)
        while sub is not None and not cursor.saw_done:
            next_entry = asyncio.ensure_future(sub.next())
            waiting: set[asyncio.Future[Any]] = {next_entry, ended}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_entry not in done:
                next_entry.cancel()
                for event in cursor.events(await sub.rest()):  # what came before the end
                    yield event
                break
            for event in cursor.events([next_entry.result()]):
                yield event
        job = await _final(job_id, ended)
        if job is None:
            yield _sse("timeout", {"message": f"the stream's {longest:.0f} s are up; GET /v1/jobs/{job_id}"})
            return
        if not cursor.sent_text and job["result"]:
            yield _sse("delta", {"text": job["result"]})
        yield _sse("done", job)
    finally:
        ended.cancel()
        if next_entry is not None:
            next_entry.cancel()
        if sub is not None:
            sub.close()


async def _final(job_id: str, ended: asyncio.Future[Job | None]) -> dict[str, Any] | None:
    """The ended job's state for the `done` event; None when it did not end in time."""
    job = await ended
    return None if job is None else _final_state(job)


def _final_state(job: Job) -> dict[str, Any]:
    return {
        "status": job.status,
        "result": job.result_text,
        "finish_reason": job.finish_reason,
        "error": {"type": job.error_type, "message": job.error_message} if job.error_type else None,
        "usage": {"input_tokens": job.input_tokens, "output_tokens": job.output_tokens},
        "cost_usd": str(job.cost_usd),
    }


_open: dict[str, int] = {}


def _take(owner_id: str) -> None:
    """Count one more open stream for the key, or a 429 past its cap."""
    cap, _ = stream_limits()
    if _open.get(owner_id, 0) >= cap:
        raise ApiError(
            429,
            f"this key already has {cap} streams open here (LLMQUEUE_MAX_STREAMS_PER_KEY); "
            "close one, or poll GET /v1/jobs/{id}",
            code="too_many_streams",
        )
    _open[owner_id] = _open.get(owner_id, 0) + 1


def _release(owner_id: str) -> None:
    left = _open.get(owner_id, 1) - 1
    if left > 0:
        _open[owner_id] = left
    else:
        _open.pop(owner_id, None)


async def open_job_stream(job_id: str, owner_id: str) -> StreamingResponse:
    """The job's event stream, or a 404 when this key has no such job (or a 429 past the
    key's open streams). The owner check is the wait's first look: one query, no job loaded
    unless it has ended, and no connection held afterwards."""
    begun = await ended_jobs().begin(job_id, owner_id)
    if begun is None:
        raise ApiError(404, f"no job {job_id!r} for this API key", param="job_id", code="job_not_found")
    try:
        _take(owner_id)
    except ApiError:
        ended_jobs().abandon(job_id, begun)
        raise

    def end() -> None:
        _release(owner_id)
        ended_jobs().abandon(job_id, begun)

    return _JobStream(_events(job_id, owner_id, begun), end)


class _JobStream(StreamingResponse):
    """An event stream whose key count and wait are given back when the response ends, in
    every case: a body that never started (the client gone before the headers went out)
    never runs its generator's `finally`."""

    def __init__(self, body: AsyncIterator[bytes], end: Callable[[], None]) -> None:
        super().__init__(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._end = end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._end()
