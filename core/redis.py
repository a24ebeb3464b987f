"""The shared Redis clients: one synchronous client per URL per process, and one asyncio client
per event loop, each with connect and socket timeouts so a Redis that stops answering is an
error after seconds, never a hang.

Redis holds shared health, round-robin positions, token streams and locks; `REDIS_URL` turns
it on, and without it (the embedded default) these return None and callers keep that state
in the process.
"""

from __future__ import annotations

import asyncio
from functools import cache

import redis
import redis.asyncio as aredis

from core.settings import get_settings

CONNECT_TIMEOUT_S = 5.0
# Longer than any blocking read we issue (XREAD blocks for at most a second or two).
SOCKET_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 400  # redis-py raises past its pool's size; a worker runs hundreds of threads
ASYNC_MAX_CONNECTIONS = 200  # per event loop; past it a caller waits for a free connection


@cache
def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )


def shared_redis() -> redis.Redis | None:
    """This process's Redis client, or None without REDIS_URL."""
    url = get_settings().redis_url
    return redis_client(url) if url else None


# An asyncio Redis client belongs to the loop that made it: keyed by (url, loop id).
_async_clients: dict[tuple[str, int], aredis.Redis] = {}


def async_redis() -> aredis.Redis | None:
    """The running loop's asyncio Redis client, or None without REDIS_URL."""
    url = get_settings().redis_url
    if not url:
        return None
    key = (url, id(asyncio.get_running_loop()))
    client = _async_clients.get(key)
    if client is None:
        pool = aredis.BlockingConnectionPool.from_url(
            url,
            max_connections=ASYNC_MAX_CONNECTIONS,
            timeout=SOCKET_TIMEOUT_S,
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
        )
        client = _async_clients[key] = aredis.Redis(connection_pool=pool)
    return client
