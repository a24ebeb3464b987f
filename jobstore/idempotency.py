"""Idempotency records: what a creating request made with an Idempotency-Key answered.

The way Stripe does it. A record is scoped to the API key that sent the request and kept
24 hours (`TTL`); older ones are ignored by `find` and deleted by `delete_expired`, which a
periodic loop calls. A record is written in the very transaction that creates the resource
(`save`, just before its commit), so a record exists exactly when its resource does: no
"in progress" state that a crash could leave behind.

Two requests with one key racing: both find nothing and both do the work, but their records
share a primary key, so the second INSERT waits on the first transaction and then fails;
`save` rolls its transaction back (its resource with it) and raises `RaceLost`, and the
caller answers with the winner's record instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.clock import utcnow
from jobstore.db import transaction
from jobstore.models import IdempotencyRecord

TTL = timedelta(hours=24)
CLEANUP_EVERY_S = 3600.0


class RaceLost(Exception):
    """Another request with the same Idempotency-Key committed first; this one's work was
    rolled back."""

    def __init__(self, owner_id: str, key: str) -> None:
        super().__init__(f"Idempotency-Key {key!r} was used by a concurrent request")
        self.owner_id = owner_id
        self.key = key


def find(session: Session, owner_id: str, key: str, now: datetime) -> IdempotencyRecord | None:
    """The live record of this key's Idempotency-Key, if any (expired ones do not count)."""
    return session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.owner_id == owner_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at >= now - TTL,
        )
    )


def save(
    session: Session,
    *,
    owner_id: str,
    key: str,
    route: str,
    fingerprint: str,
    status_code: int,
    response: dict[str, Any],
    resource_id: str | None,
    now: datetime,
) -> None:
    """Record the answer in the caller's transaction (the one creating the resource; the caller
    commits). Raises RaceLost, with the transaction rolled back, when a concurrent request
    with this key got there first."""
    # An expired record of this key would hold the primary key: it no longer counts.
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.owner_id == owner_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at < now - TTL,
        )
    )
    record = IdempotencyRecord(
        owner_id=owner_id,
        key=key,
        route=route,
        fingerprint=fingerprint,
        status_code=status_code,
        response=response,
        resource_id=resource_id,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(record)
    except IntegrityError:
        session.rollback()
        raise RaceLost(owner_id, key) from None


def delete_expired(session: Session, now: datetime) -> int:
    """Delete the records older than the TTL; returns how many. The caller commits. (`cleanup`
    runs it every CLEANUP_EVERY_S from the dispatchers' loops, so one run deletes about an
    hour's records.)"""
    result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - TTL))
    return int(getattr(result, "rowcount", 0) or 0)


def cleanup() -> int:
    """`delete_expired` in its own transaction, now: what the periodic loop runs."""
    with transaction() as session:
        return delete_expired(session, utcnow())
