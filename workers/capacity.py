"""Provider capacity: each deployment's requests per minute, tokens per minute and calls in
flight, enforced before each call across every worker process and host; and the same per API
key when the key sets its own limits.

Admission paces calls rather than letting them fail: one atomic Redis script per call finds
the earliest moment the call fits every limit in scope (the deployment's, and the key's) and
books it there (generic cell rate: each limit keeps a theoretical arrival time, pushed on by
1/rate per request and by tokens/rate per token), so concurrent workers never race and never
poll; the caller sleeps until its slot and calls. Tokens are booked from the job's estimate
(input plus the output it may produce) and the difference is given back when the real usage
is known. Calls in flight are a sorted set of call ids with their expiry; a worker waiting for
one to end is woken by a publish when one does (and looks again every second regardless).

Limits come from the catalog (`rpm`, `tpm`, `max_concurrency` on a deployment) or are learned:
the rate-limit headers providers send (`x-ratelimit-limit-requests`, `anthropic-ratelimit-*`,
...) set a deployment's learned limits, a `remaining` of 0 pauses it until the next call has
room (workers/ratelimit_headers.py), and a 429 pauses it for its Retry-After and, when no
limit is known, shrinks its pace to 90% of what was admitted in the last minute. The
dispatcher reads the same state to tell a saturated deployment (`expected_wait`) and spill a
job to its next candidate.

Without Redis (the embedded default) the same arithmetic runs in this process's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from core.redis import async_redis, shared_redis
from core.settings import get_settings
from routing.catalog import Deployment
from workers.capacity_scripts import ACQUIRE, ADMIT, GIVE_BACK, UNQUEUE
from workers.ratelimit_headers import LearnedLimits, parse_limits

log = logging.getLogger(__name__)

SAFETY = 0.98  # pace at 98% of a limit: requests reach the provider a few ms apart from our clock
STATE_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Limits:
    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm or self.max_concurrency)


def deployment_limits(deployment: Deployment) -> Limits:
    spec = deployment.spec
    return Limits(spec.rpm, spec.tpm, spec.max_concurrency)


@dataclass(frozen=True)
class CapacityView:
    """A deployment's (or key's) limits and use, for routing and for `GET /v1/providers`."""

    rpm: float | None  # in force: configured, else learned
    tpm: float | None
    learned_rpm: float | None
    learned_tpm: float | None
    next_slot_in_s: float  # how far ahead its earliest free slot is booked
    queued: int  # calls sent to it that have not been admitted yet
    in_flight: int
    paused_for_s: float

    def expected_wait_s(self) -> float:
        """About how long a call sent now waits for its slot."""
        per_call = 60.0 / self.rpm if self.rpm else 0.0
        return max(self.next_slot_in_s, self.paused_for_s) + self.queued * per_call


class Store(Protocol):
    async def admit(self, scopes: list[tuple[str, Limits]], tokens: int, now: float) -> float: ...
    async def give_back(self, scope: str, limits: Limits, booked: int, used: int) -> None: ...
    async def acquire(self, scope: str, call_id: str, limit: int, now: float, timeout_s: float) -> bool: ...
    async def release(self, scope: str, call_id: str) -> None: ...
    async def wait_release(self, scope: str, timeout_s: float) -> None: ...
    async def pause(self, scope: str, until: float) -> None: ...
    async def paused_until(self, scope: str) -> float: ...
    async def learn(self, scope: str, learned: LearnedLimits) -> None: ...
    async def admitted_last_minute(self, scope: str, now: float) -> int: ...
    def queue(self, counts: Mapping[str, int]) -> None: ...
    async def started(self, counts: Mapping[str, int]) -> None: ...
    def views(self, scopes: Mapping[str, Limits], now: float) -> dict[str, CapacityView]: ...


def _float(value: Any) -> float:
    try:
        return float(value) if value is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


class RedisStore:
    """Capacity state shared by every process through Redis, under `prefix`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._events: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None

    def key(self, scope: str) -> str:
        return f"{self.prefix}cap:{scope}"

    def _async(self) -> Any:
        client = async_redis()
        assert client is not None
        return client

    async def admit(self, scopes: list[tuple[str, Limits]], tokens: int, now: float) -> float:
        argv: list[Any] = [repr(now), tokens, SAFETY, STATE_TTL_S]
        for _, limits in scopes:
            argv += [limits.rpm or 0, limits.tpm or 0]
        slot = await self._async().eval(ADMIT, len(scopes), *[self.key(s) for s, _ in scopes], *argv)
        return float(slot)

    async def give_back(self, scope: str, limits: Limits, booked: int, used: int) -> None:
        if booked > used:
            await self._async().eval(GIVE_BACK, 1, self.key(scope), booked, used, limits.tpm or 0, SAFETY)

    async def acquire(self, scope: str, call_id: str, limit: int, now: float, timeout_s: float) -> bool:
        taken = await self._async().eval(
            ACQUIRE, 1, self.key(scope) + ":inflight", repr(now), call_id, repr(now + timeout_s), limit
        )
        return bool(int(taken))

    async def release(self, scope: str, call_id: str) -> None:
        client = self._async()
        await client.zrem(self.key(scope) + ":inflight", call_id)
        await client.publish(f"{self.prefix}cap-free", scope)

    async def wait_release(self, scope: str, timeout_s: float) -> None:
        self._ensure_listener()
        event = self._events.setdefault(scope, asyncio.Event())
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def _ensure_listener(self) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        """Wake this process's waiters when any process frees a call slot."""
        while True:
            try:
                pubsub = self._async().pubsub()
                await pubsub.subscribe(f"{self.prefix}cap-free")
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        event = self._events.get(str(message.get("data")))
                        if event is not None:
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis away: waiters still look again every second
                log.warning("capacity: lost the slot-free channel; retrying", exc_info=True)
                await asyncio.sleep(1)

    async def pause(self, scope: str, until: float) -> None:
        client = self._async()
        current = _float(await client.hget(self.key(scope), "paused"))
        if until > current:
            await client.hset(self.key(scope), "paused", repr(until))

    async def paused_until(self, scope: str) -> float:
        return _float(await self._async().hget(self.key(scope), "paused"))

    async def learn(self, scope: str, learned: LearnedLimits) -> None:
        values = {}
        if learned.rpm:
            values["rpm_l"] = repr(float(learned.rpm))
        if learned.tpm:
            values["tpm_l"] = repr(float(learned.tpm))
        if values:
            await self._async().hset(self.key(scope), mapping=values)

    async def admitted_last_minute(self, scope: str, now: float) -> int:
        seconds = range(math.floor(now) - 59, math.floor(now) + 1)
        counts = await self._async().mget([f"{self.key(scope)}:n:{s}" for s in seconds])
        return sum(int(c) for c in counts if c)

    def queue(self, counts: Mapping[str, int]) -> None:
        client = shared_redis()
        if client is None or not counts:
            return
        pipe = client.pipeline(transaction=False)
        for scope, count in counts.items():
            pipe.hincrby(self.key(scope), "queued", count)
            pipe.expire(self.key(scope), STATE_TTL_S)
        pipe.execute()

    async def started(self, counts: Mapping[str, int]) -> None:
        if counts:
            names = list(counts)
            await self._async().eval(UNQUEUE, len(names), *[self.key(n) for n in names], *counts.values())

    def views(self, scopes: Mapping[str, Limits], now: float) -> dict[str, CapacityView]:
        client = shared_redis()
        if client is None or not scopes:
            return {}
        pipe = client.pipeline(transaction=False)
        names = list(scopes)
        for scope in names:
            pipe.hmget(self.key(scope), "tat_r", "tat_t", "paused", "rpm_l", "tpm_l", "queued")
            pipe.zcount(self.key(scope) + ":inflight", repr(now), "+inf")
        replies = pipe.execute()
        views = {}
        for i, scope in enumerate(names):
            tat_r, tat_t, paused, rpm_l, tpm_l, queued = (_float(v) for v in replies[2 * i])
            limits = scopes[scope]
            rpm = limits.rpm or rpm_l or None
            tpm = limits.tpm or tpm_l or None
            next_slot = max(tat_r if rpm else 0.0, tat_t if tpm else 0.0) - now
            views[scope] = CapacityView(
                rpm=rpm,
                tpm=tpm,
                learned_rpm=rpm_l or None,
                learned_tpm=tpm_l or None,
                next_slot_in_s=max(0.0, next_slot),
                queued=max(0, int(queued)),
                in_flight=int(replies[2 * i + 1]),
                paused_for_s=max(0.0, paused - now),
            )
        return views


class LocalStore:
    """The same limits in this process's memory (embedded mode: one machine runs everything)."""

    def __init__(self) -> None:
        self._state: dict[str, dict[str, float]] = {}
        self._inflight: dict[str, dict[str, float]] = {}
        self._counts: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()
        self._events: dict[str, asyncio.Event] = {}

    def _st(self, scope: str) -> dict[str, float]:
        return self._state.setdefault(scope, {})

    async def admit(self, scopes: list[tuple[str, Limits]], tokens: int, now: float) -> float:
        with self._lock:
            slot = now
            rates = []
            for scope, limits in scopes:
                st = self._st(scope)
                rpm = (limits.rpm or st.get("rpm_l", 0.0)) * SAFETY
                tpm = (limits.tpm or st.get("tpm_l", 0.0)) * SAFETY
                rates.append((st, rpm, tpm))
                slot = max(slot, st.get("paused", 0.0))
                if rpm:
                    slot = max(slot, st.get("tat_r", 0.0))
                if tpm:
                    slot = max(slot, st.get("tat_t", 0.0))
            for (scope, _), (st, rpm, tpm) in zip(scopes, rates, strict=True):
                if rpm:
                    st["tat_r"] = slot + 60 / rpm
                if tpm:
                    st["tat_t"] = slot + tokens * 60 / tpm
                st["queued"] = max(0.0, st.get("queued", 0.0) - 1)
                buckets = self._counts.setdefault(scope, {})
                buckets[math.floor(slot)] = buckets.get(math.floor(slot), 0) + 1
            return slot

    async def give_back(self, scope: str, limits: Limits, booked: int, used: int) -> None:
        with self._lock:
            st = self._st(scope)
            tpm = (limits.tpm or st.get("tpm_l", 0.0)) * SAFETY
            if tpm and booked > used and "tat_t" in st:
                st["tat_t"] -= (booked - used) * 60 / tpm

    async def acquire(self, scope: str, call_id: str, limit: int, now: float, timeout_s: float) -> bool:
        with self._lock:
            calls = {c: t for c, t in self._inflight.get(scope, {}).items() if t > now}
            self._inflight[scope] = calls
            if len(calls) >= limit:
                return False
            calls[call_id] = now + timeout_s
            return True

    async def release(self, scope: str, call_id: str) -> None:
        with self._lock:
            self._inflight.get(scope, {}).pop(call_id, None)
        event = self._events.get(scope)
        if event is not None:
            event.set()

    async def wait_release(self, scope: str, timeout_s: float) -> None:
        event = self._events.setdefault(scope, asyncio.Event())
        event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    async def pause(self, scope: str, until: float) -> None:
        with self._lock:
            st = self._st(scope)
            st["paused"] = max(st.get("paused", 0.0), until)

    async def paused_until(self, scope: str) -> float:
        with self._lock:
            return self._st(scope).get("paused", 0.0)

    async def learn(self, scope: str, learned: LearnedLimits) -> None:
        with self._lock:
            st = self._st(scope)
            if learned.rpm:
                st["rpm_l"] = float(learned.rpm)
            if learned.tpm:
                st["tpm_l"] = float(learned.tpm)

    async def admitted_last_minute(self, scope: str, now: float) -> int:
        with self._lock:
            buckets = self._counts.get(scope, {})
            return sum(n for second, n in buckets.items() if second > now - 60)

    def queue(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for scope, count in counts.items():
                st = self._st(scope)
                st["queued"] = st.get("queued", 0.0) + count

    async def started(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            for scope, count in counts.items():
                st = self._st(scope)
                st["queued"] = max(0.0, st.get("queued", 0.0) - count)

    def views(self, scopes: Mapping[str, Limits], now: float) -> dict[str, CapacityView]:
        with self._lock:
            views = {}
            for scope, limits in scopes.items():
                st = self._state.get(scope, {})
                rpm = limits.rpm or st.get("rpm_l") or None
                tpm = limits.tpm or st.get("tpm_l") or None
                next_slot = max(st.get("tat_r", 0.0) if rpm else 0.0, st.get("tat_t", 0.0) if tpm else 0.0)
                views[scope] = CapacityView(
                    rpm=rpm,
                    tpm=tpm,
                    learned_rpm=st.get("rpm_l"),
                    learned_tpm=st.get("tpm_l"),
                    next_slot_in_s=max(0.0, next_slot - now),
                    queued=int(st.get("queued", 0.0)),
                    in_flight=sum(1 for t in self._inflight.get(scope, {}).values() if t > now),
                    paused_for_s=max(0.0, st.get("paused", 0.0) - now),
                )
            return views


@cache
def store() -> Store:
    if shared_redis() is None:
        return LocalStore()
    return RedisStore(get_settings().redis_prefix)


def key_scope(owner_id: str) -> str:
    return f"key:{owner_id}"


# ---------------------------------------------------------------- what a call does

# What this process knows of each deployment's limits beyond the catalog: learned from the
# headers it has seen, or that it was rate limited. A deployment with no limit of any kind is
# called without a booking (the common case costs no Redis round trip); one with a limit, even
# one learned by another process, is booked. Another process's learning reaches this one
# through its own calls' headers, or its first 429.
_learned: dict[str, LearnedLimits] = {}
_limited: set[str] = set()
_unbooked: dict[str, dict[int, int]] = {}  # calls made without a booking, per deployment and second
# Calls started without a booking since they were last taken off their deployment's `queued`
# count (the dispatcher's measure of the work waiting there), in one Redis call every so often.
_started: dict[str, int] = {}
_started_flushed = 0.0
STARTED_FLUSH_S = 0.5


@dataclass
class Admission:
    """A call's booking: when it may start, and what to give back or release afterwards."""

    slot: float
    tokens: int
    scopes: list[tuple[str, Limits]]
    call_id: str = ""
    concurrency_scope: str | None = None
    booked: bool = True


def paced(deployment: Deployment, key: tuple[str, Limits] | None) -> bool:
    """Whether a call to this deployment (for this key) must book a slot."""
    name = deployment.name
    return (
        deployment_limits(deployment).any
        or name in _limited
        or bool(_learned.get(name, LearnedLimits()).rpm or _learned.get(name, LearnedLimits()).tpm)
        or (key is not None and key[1].any)
    )


async def admit(
    deployment: Deployment, tokens: int, *, key: tuple[str, Limits] | None = None, now: float | None = None
) -> Admission:
    """Book the earliest slot where a call of `tokens` fits the deployment's limits (and the
    key's); a deployment with no limit known is not booked (its slot is now)."""
    scopes = [(deployment.name, deployment_limits(deployment))]
    if key is not None and key[1].any:
        scopes.append((key_scope(key[0]), key[1]))
    now = time.time() if now is None else now
    if not paced(deployment, key):
        seconds = _unbooked.setdefault(deployment.name, {})
        second = math.floor(now)
        seconds[second] = seconds.get(second, 0) + 1
        if len(seconds) > 120:  # keep about the last two minutes
            for old in [t for t in seconds if t < second - 120]:
                del seconds[old]
        _started[deployment.name] = _started.get(deployment.name, 0) + 1
        return Admission(now, tokens, scopes, booked=False)
    slot = await store().admit(scopes, tokens, now)
    return Admission(slot, tokens, scopes)


async def wait_for_slot(admission: Admission, deployment: Deployment, call_id: str, timeout_s: float) -> None:
    """Sleep until the booked slot, then take a call-in-flight slot when the deployment caps them.

    A pause the provider announced after the booking (a 429's Retry-After, an exhausted window,
    seen by any process) still holds the call: it books again, past the pause. Otherwise every
    call booked ahead of a 429 would meet its own."""
    st = store()
    while True:
        delay = admission.slot - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if not admission.booked or await st.paused_until(admission.scopes[0][0]) <= time.time():
            break
        admission.slot = await st.admit(admission.scopes, admission.tokens, time.time())
    limit = deployment.spec.max_concurrency
    if not limit:
        return
    while not await st.acquire(deployment.name, call_id, limit, time.time(), timeout_s):
        await st.wait_release(deployment.name, 1.0)
    admission.call_id, admission.concurrency_scope = call_id, deployment.name


async def after_call(
    admission: Admission,
    *,
    used_tokens: int | None,
    headers: Mapping[str, str] | None,
    retry_after: float | None,
    rate_limited: bool,
) -> None:
    """Release the call slot, give back unused tokens, and learn from what the provider said."""
    global _started_flushed
    st = store()
    if admission.concurrency_scope:
        await st.release(admission.concurrency_scope, admission.call_id)
    if _started and time.monotonic() - _started_flushed > STARTED_FLUSH_S:
        counts = dict(_started)
        _started.clear()
        _started_flushed = time.monotonic()
        await st.started(counts)
    scope, limits = admission.scopes[0]
    if used_tokens is not None and admission.booked:
        for name, scope_limits in admission.scopes:
            await st.give_back(name, scope_limits, admission.tokens, used_tokens)
    now = time.time()
    learned = parse_limits(headers or {}, now)
    if (learned.rpm or learned.tpm) and (learned.rpm, learned.tpm) != _known_limits(scope):
        _learned[scope] = LearnedLimits(learned.rpm, learned.tpm)
        await st.learn(scope, learned)
    if learned.paused_until:
        await st.pause(scope, learned.paused_until)
    if rate_limited:
        _limited.add(scope)
        await st.pause(scope, now + (retry_after or 1.0))
        if not (limits.rpm or learned.rpm or _known_limits(scope)[0]):
            # No known limit: pace at 90% of what went through in the last minute.
            local = sum(n for t, n in _unbooked.get(scope, {}).items() if t > now - 60)
            admitted = max(local, await st.admitted_last_minute(scope, now))
            if admitted > 1:
                await st.learn(scope, LearnedLimits(rpm=max(1.0, admitted * 0.9)))


def _known_limits(scope: str) -> tuple[float | None, float | None]:
    known = _learned.get(scope)
    return (known.rpm, known.tpm) if known is not None else (None, None)
