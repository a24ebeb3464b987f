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
per event loop), so a slow Redis round trip never blocks the other calls on that loop. A
failed publish is logged and the stream for that call stops; the stored result (which the
API's `done` event carries) is unaffected.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable

import redis

from core.redis import async_redis, shared_redis
from core.settings import get_settings
from core.text import storable

log = logging.getLogger(__name__)

STREAM_TTL_S = 3600
MAX_ENTRIES = 100_000

DeltaSink = Callable[[str], Awaitable[None]]


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


def delta_sink(job_id: str) -> DeltaSink:
    """An `on_text` callback for one provider call: publishes a `call` marker, then each delta,
    in order (each publish is awaited before the adapter reads the next chunk)."""
    call_id = uuid.uuid4().hex
    state = {"opened": False, "broken": False}

    async def sink(delta: str) -> None:
        if state["broken"] or not delta:
            return
        try:
            if not state["opened"]:
                await apublish(job_id, "call", call_id)
                state["opened"] = True
            # An unpaired surrogate cannot be sent to Redis: scrubbed as the stored result is.
            await apublish(job_id, "delta", storable(delta))
        except (redis.RedisError, OSError) as exc:  # streaming is best effort; the call goes on
            state["broken"] = True
            log.warning("job %s: stopped streaming deltas: %s", job_id, type(exc).__name__)

    return sink
