"""Token streams from workers to SSE clients, through Redis Streams.

A worker appends each text delta to `{prefix}stream:{job_id}` as it arrives and a final
`done` entry once the job's outcome is committed; the API reads from the start, so a client
that connects late gets what was already produced, then the rest. Entries expire an hour
after the last write. Without Redis (the embedded default) nothing is published and the API
streams the stored result.

Each provider call of a job opens with a `call` entry carrying a fresh id: when a call that
had already streamed text is retried or failed over, the next call's text starts from the
beginning, and the API tells its clients to discard what they had (`reset`).

Deltas are published from the worker's asyncio call loop with `redis.asyncio` (one client
per event loop), so a slow Redis round trip never blocks the other calls on that loop; a
call has one publish in flight at a time, and the deltas that arrive meanwhile go out
together as one entry (`StreamSink`), so a loaded Redis gets fewer, bigger entries. A
failed publish is logged and the stream for that call stops; the stored result (which the
API's `done` event carries) is unaffected.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import redis

from core.redis import async_redis, shared_redis
from core.settings import get_settings
from core.text import storable

log = logging.getLogger(__name__)

STREAM_TTL_S = 3600
MAX_ENTRIES = 100_000


def stream_key(job_id: str) -> str:
    return f"{get_settings().redis_prefix}stream:{job_id}"


def publish(job_id: str, event: str, data: str = "") -> None:
    """Append one entry from synchronous code (the `done` after a job's outcome is committed)."""
    client = shared_redis()
    if client is None:
        return
    key = stream_key(job_id)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, {"event": event, "data": data}, maxlen=MAX_ENTRIES, approximate=True)
    pipe.expire(key, STREAM_TTL_S)
    pipe.execute()


def ended_channel() -> str:
    """The pub/sub channel that carries the ids of jobs that ended (API processes listen)."""
    return f"{get_settings().redis_prefix}jobs-ended"


def publish_ended(job_ids: list[str]) -> None:
    """Tell whoever waits (a chat completion, a stream) that these jobs ended: one message for
    many, after the commit that ended them; best effort (waiters also look themselves)."""
    client = shared_redis()
    if client is None or not job_ids:
        return
    client.publish(ended_channel(), json.dumps(job_ids))


async def apublish(job_id: str, event: str, data: str = "") -> None:
    """Append one entry from the call loop, without blocking it."""
    client = async_redis()
    if client is None:
        return
    key = stream_key(job_id)
    async with client.pipeline(transaction=False) as pipe:
        pipe.xadd(key, {"event": event, "data": data}, maxlen=MAX_ENTRIES, approximate=True)
        pipe.expire(key, STREAM_TTL_S)
        await pipe.execute()


class StreamSink:
    """An `on_text` callback for one provider call: publishes a `call` marker, then the deltas,
    in order, one publish in flight at a time. A delta that arrives while one is in flight waits
    and goes out with the others that came meanwhile, as one entry: the call never waits for
    Redis, and a thousand streaming calls make as many publishes as Redis can take, not one per
    token. `flush` waits until everything given has been sent (or streaming has stopped)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.call_id = uuid.uuid4().hex
        self.opened = False
        self.broken = False
        self.pending: list[str] = []
        self.sending: asyncio.Task[None] | None = None

    async def __call__(self, delta: str) -> None:
        if self.broken or not delta:
            return
        # An unpaired surrogate cannot be sent to Redis: scrubbed as the stored result is.
        self.pending.append(storable(delta))
        if self.sending is None or self.sending.done():
            self.sending = asyncio.ensure_future(self._send())

    async def _send(self) -> None:
        while self.pending and not self.broken:
            text = "".join(self.pending)
            self.pending.clear()
            try:
                if not self.opened:
                    await apublish(self.job_id, "call", self.call_id)
                    self.opened = True
                await apublish(self.job_id, "delta", text)
            except (redis.RedisError, OSError) as exc:  # streaming is best effort; the call goes on
                self.broken = True
                log.warning("job %s: stopped streaming deltas: %s", self.job_id, type(exc).__name__)

    async def flush(self) -> None:
        if self.sending is not None:
            await asyncio.shield(self.sending)


def delta_sink(job_id: str) -> StreamSink:
    """The `on_text` callback of one provider call of `job_id` (flush it when the call ends)."""
    return StreamSink(job_id)
