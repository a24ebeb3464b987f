"""Waiting for jobs without holding anything: woken by events, one Redis connection a process.

Two hubs, one of each per API process, started on first use on the API's event loop:

- `ended`: a subscription to the channel where workers publish the ids of jobs that ended
  (`workers.streams.publish_ended`, after each commit). `wait_ended(job_id)` returns the
  ended job as soon as its id comes by. A waiter also looks at Postgres (a short session,
  returned at once) when it starts, in case the job ended before it subscribed; in case an
  event was lost (Redis restarting), one query every FALLBACK_S looks for every job waited
  for in the process. Without Redis (the embedded default) each waiter looks itself, with a
  growing interval.
- `streams`: one XREAD for every job stream clients are reading in this process (a blocking
  read names all their keys at once), its entries fanned out to each client's queue. A
  thousand SSE clients cost one Redis connection and no database connection.

Neither holds a database connection while it waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.orm import Session, raiseload

from core.redis import async_redis
from core.settings import get_settings
from jobstore.db import session_factory
from jobstore.models import ENDED_JOB_STATUSES, Job
from workers.streams import ended_channel, stream_key

log = logging.getLogger(__name__)
FALLBACK_S = 5.0  # how often this process looks at Postgres for all its waiters (events can be lost)
EMBEDDED_POLL_S = (0.02, 0.5)  # without Redis: first and longest pause between looks
READ_BLOCK_MS = 250  # a new stream joins the shared read within this
READ_COUNT = 500
# After a read that brought entries, the shared read waits this long before the next, so each
# round gathers many streams' entries: a read names every open stream, and a thousand streams
# each sending a delta would otherwise make a thousand rounds of a thousand names.
READ_GATHER_S = 0.02
READ_GATHER_PER_KEY_S = 0.00005
ENDED_CHUNK = 1000  # job ids per query of the shared fallback look


def load_if_ended(job_id: str) -> Job | None:
    """The job, detached, when it has ended; None while it runs (or when it does not exist).
    One query, and no row loaded while it runs."""
    with session_factory()() as session:
        return _ended_job(session, job_id)


def look_owned(job_id: str, owner_id: str) -> tuple[bool, Job | None]:
    """(whether the key owns the job, the job detached when it has ended) in one query for a
    job still running, two for one that ended."""
    with session_factory()() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id, Job.owner_id == owner_id))
        if status is None:
            return False, None
        return True, _ended_job(session, job_id) if status in ENDED_JOB_STATUSES else None


def _ended_job(session: Session, job_id: str) -> Job | None:
    """The job, detached, if it has ended. Without its attempts: what waiters make of an ended
    job (the `done` event, a completion) reads only the job's own columns, and reading them
    would raise rather than quietly show none."""
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id, Job.status.in_(ENDED_JOB_STATUSES))
        .options(raiseload(Job.attempts))
    )
    if job is not None:
        session.expunge(job)
    return job


def ended_among(job_ids: list[str]) -> list[str]:
    """Which of these jobs have ended: one query a thousand ids."""
    found: list[str] = []
    with session_factory()() as session:
        for start in range(0, len(job_ids), ENDED_CHUNK):
            chunk = job_ids[start : start + ENDED_CHUNK]
            query = select(Job.id).where(Job.id.in_(chunk), Job.status.in_(ENDED_JOB_STATUSES))
            found += session.scalars(query).all()
    return found


class EndedJobs:
    """Futures of the jobs this process waits for, resolved by the workers' published ends,
    and, in case an end was lost, by one look at Postgres for all of them every FALLBACK_S."""

    def __init__(self) -> None:
        # Each waiter's future; set to when it was woken (a look from then on sees the end).
        self._waiting: dict[str, set[asyncio.Future[float]]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._fallback: asyncio.Task[None] | None = None
        # The look at Postgres in flight per job, and when it began: waiters of one job (ten
        # clients streaming it) share a look that began after they asked, not one each.
        self._looks: dict[str, tuple[float, asyncio.Future[Job | None]]] = {}

    def _ensure_listener(self) -> None:
        if async_redis() is None:
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        if self._fallback is None or self._fallback.done():
            self._fallback = asyncio.get_running_loop().create_task(self._look_for_all())

    async def _listen(self) -> None:
        channel = ended_channel()
        while True:
            try:
                client = async_redis()
                assert client is not None
                pubsub = client.pubsub()
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._wake(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: waiters look at Postgres meanwhile
                log.warning("lost the ended-jobs channel; subscribing again", exc_info=True)
                await asyncio.sleep(1.0)

    async def _look_for_all(self) -> None:
        """Every FALLBACK_S, one look at Postgres for every job waited for here (not one look
        per waiter: a thousand streams would make two hundred queries a second)."""
        while True:
            await asyncio.sleep(FALLBACK_S * (0.8 + 0.4 * random.random()))
            waited = list(self._waiting)
            if not waited:
                continue
            try:
                self._wake(await asyncio.to_thread(ended_among, waited))
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away: look again next round
                log.warning("could not look for %d waited jobs", len(waited), exc_info=True)

    def _wake(self, job_ids: list[str]) -> None:
        now = time.monotonic()
        for job_id in job_ids:
            for future in self._waiting.get(job_id, ()):
                if not future.done():
                    future.set_result(now)

    async def _look_since(self, job_id: str, since: float) -> Job | None:
        """A look at Postgres that began at or after `since` (so it sees every end published
        before then), shared with the other waiters of the job that can take it."""
        current = self._looks.get(job_id)
        if current is None or current[0] < since:
            look = asyncio.ensure_future(_look(job_id))
            current = (time.monotonic(), look)
            self._looks[job_id] = current

            def forget(done: asyncio.Future[Job | None]) -> None:
                if job_id in self._looks and self._looks[job_id][1] is done:
                    del self._looks[job_id]

            look.add_done_callback(forget)
        return await asyncio.shield(current[1])

    async def begin(self, job_id: str, owner_id: str) -> Begun | None:
        """Register a waiter for the job, then look at it once, checking its owner in the same
        query: None when this key has no such job. A stream opening pays one look, not an
        owner check and then a look (a thousand streams opening at once are a burst of both)."""
        self._ensure_listener()
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[job_id].add(future)
        since = time.monotonic()
        try:
            found, job = await asyncio.to_thread(look_owned, job_id, owner_id)
        except BaseException:
            self._forget(job_id, future)
            raise
        if not found:
            self._forget(job_id, future)
            return None
        return Begun(future, since, job)

    async def wait(self, job_id: str, timeout_s: float, begun: Begun | None = None) -> Job | None:
        """The job once it has ended, or None after `timeout_s`; `begun` carries on a wait
        whose first look `begin` made."""
        self._ensure_listener()
        deadline = time.monotonic() + timeout_s
        redis_on = async_redis() is not None
        pause = EMBEDDED_POLL_S[0]
        since = begun.since if begun is not None else None
        while True:
            looked: Job | None = None
            if begun is not None:
                future, looked, first = begun.future, begun.job, True
                begun = None
            else:
                future = asyncio.get_running_loop().create_future()
                self._waiting[job_id].add(future)
                first = False
            if since is None:  # the first look begins after this waiter is registered
                since = time.monotonic()
            try:
                job = looked if first else await self._look_since(job_id, since)
                if job is not None:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if redis_on:  # woken by the event or by the shared look (`_look_for_all`)
                    wait = left
                else:
                    wait, pause = min(left, pause), min(EMBEDDED_POLL_S[1], pause * 1.5)
                try:
                    since = await asyncio.wait_for(asyncio.shield(future), wait)
                except TimeoutError:
                    since = time.monotonic()
            finally:
                self._forget(job_id, future)

    def abandon(self, job_id: str, begun: Begun) -> None:
        """Drop a wait `begin` registered that will not be carried on."""
        self._forget(job_id, begun.future)

    def _forget(self, job_id: str, future: asyncio.Future[float]) -> None:
        waiters = self._waiting.get(job_id)
        if waiters is not None:
            waiters.discard(future)
            if not waiters:
                del self._waiting[job_id]


@dataclass
class Begun:
    """A wait `EndedJobs.begin` registered and looked at once: the job if it had ended."""

    future: asyncio.Future[float]
    since: float
    job: Job | None


async def _look(job_id: str) -> Job | None:
    """One look at Postgres; a database that is away counts as not ended yet."""
    try:
        return await asyncio.to_thread(load_if_ended, job_id)
    except Exception:
        log.warning("could not read job %s; looking again later", job_id, exc_info=True)
        return None


class Subscription:
    """One client's view of one job stream: what was written before it joined, then the rest."""

    def __init__(self, hub: StreamHub, key: str) -> None:
        self.hub = hub
        self.key = key
        self.queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
        self.backlog: list[tuple[str, dict[str, str]]] = []
        self.last = "0-0"

    async def next(self) -> tuple[str, dict[str, str]]:
        """The next entry (waits for it); cancel the await to stop waiting."""
        if self.backlog:
            entry = self.backlog.pop(0)
            self.last = entry[0]
            return entry
        while True:
            entry = await self.queue.get()
            if _entry_order(entry[0]) > _entry_order(self.last):
                self.last = entry[0]
                return entry

    async def rest(self) -> list[tuple[str, dict[str, str]]]:
        """Everything written after the last entry this subscription returned (the job ended:
        what the shared read has not brought yet is read directly)."""
        client = async_redis()
        if client is None:
            return []
        found = await client.xrange(self.key, f"({self.last}" if self.last != "0-0" else "-", "+")
        entries = [*self.backlog, *cast(list[tuple[str, dict[str, str]]], found)]
        self.backlog = []
        fresh = [e for e in entries if _entry_order(e[0]) > _entry_order(self.last)]
        if fresh:
            self.last = fresh[-1][0]
        return fresh

    def close(self) -> None:
        self.hub.leave(self)


class StreamHub:
    """One blocking XREAD for every job stream this process's clients read."""

    def __init__(self) -> None:
        self._readers: dict[str, set[Subscription]] = defaultdict(set)
        self._cursor: dict[str, str] = {}  # the last entry the shared read saw, per key
        self._task: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()

    async def subscribe(self, job_id: str) -> Subscription | None:
        """A subscription to the job's stream from its start; None without Redis."""
        client = async_redis()
        if client is None:
            return None
        sub = Subscription(self, stream_key(job_id))
        # Join the shared read first, then read what was written before: whatever the shared
        # read finds from now on reaches this subscription, and whatever came before is in the
        # range (an entry in both is passed on once).
        self._readers[sub.key].add(sub)
        self._cursor.setdefault(sub.key, "0-0")
        self._joined.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read_all())
        try:
            found = await client.xrange(sub.key, "-", "+", count=100_000)
        except Exception:
            self.leave(sub)
            raise
        sub.backlog = list(cast(list[tuple[str, dict[str, str]]], found))
        return sub

    def leave(self, sub: Subscription) -> None:
        readers = self._readers.get(sub.key)
        if readers is not None:
            readers.discard(sub)
            if not readers:
                del self._readers[sub.key]
                self._cursor.pop(sub.key, None)

    async def _read_all(self) -> None:
        while True:
            if not self._readers:
                self._joined.clear()
                await self._joined.wait()
            client = async_redis()
            if client is None:
                return
            keys = list(self._readers)
            ids = [self._cursor.get(key, "0-0") for key in keys]
            try:  # XREAD as a plain command: redis-py's wrapper adds per-call bookkeeping
                found: Any = await client.execute_command(  # type: ignore[no-untyped-call]
                    "XREAD", "BLOCK", READ_BLOCK_MS, "COUNT", READ_COUNT, "STREAMS", *keys, *ids
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: readers wait; their final state comes from Postgres
                log.warning("stream hub: read failed; trying again", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            for key, rows in found or []:
                for entry_id, fields in rows:
                    if key in self._cursor:
                        self._cursor[key] = entry_id
                    for sub in self._readers.get(key, ()):
                        sub.queue.put_nowait((entry_id, fields))
            if found:  # a longer gather the more streams each round names (50 ms at 1,000)
                await asyncio.sleep(max(READ_GATHER_S, len(keys) * READ_GATHER_PER_KEY_S))


def _entry_order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    return int(millis or 0), int(seq or 0)


_ended: EndedJobs | None = None
_hub: StreamHub | None = None


def ended_jobs() -> EndedJobs:
    global _ended
    if _ended is None:
        _ended = EndedJobs()
    return _ended


def stream_hub() -> StreamHub:
    global _hub
    if _hub is None:
        _hub = StreamHub()
    return _hub


def stream_limits() -> tuple[int, float]:
    """(open streams a key may have in one API process, the longest a stream lasts in s)."""
    settings = get_settings()
    return settings.max_streams_per_key, settings.max_stream_s
