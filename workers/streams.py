"""Token streams from workers to SSE clients, through Redis Streams.

A worker appends each text delta to `{prefix}stream:{job_id}` as it arrives and a final
`done` entry; the API reads from the start, so a client that connects late gets what was
already produced, then the rest. Entries expire an hour after the last write. Without
Redis (the embedded default) nothing is published and the API streams the stored result.
"""

from __future__ import annotations

from functools import cache

import redis

from llmqueue.settings import get_settings

STREAM_TTL_S = 3600


@cache
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, max_connections=400, decode_responses=True)


def shared_redis() -> redis.Redis | None:
    url = get_settings().redis_url
    return redis_client(url) if url else None


def stream_key(job_id: str) -> str:
    return f"{get_settings().redis_prefix}stream:{job_id}"


def publish(job_id: str, event: str, data: str = "") -> None:
    client = shared_redis()
    if client is None:
        return
    key = stream_key(job_id)
    pipe = client.pipeline(transaction=False)
    pipe.xadd(key, {"event": event, "data": data}, maxlen=100_000, approximate=True)
    pipe.expire(key, STREAM_TTL_S)
    pipe.execute()
