"""The batch feeder: releases batches' jobs to the dispatcher as capacity allows, fairly.

A batch's jobs are stored held (`not_before = HELD_UNTIL`) rather than sent to the
dispatcher at intake. Twice a second one dispatcher process (`workers/periodic.py`) counts
the batch jobs in flight (released, dispatched or running) and releases as many more as the
window allows: split evenly between the keys that have held jobs, and within a key between
its batches, each in line order. So one key's 100,000-document batch does not starve another
key's batch submitted after it: both progress at comparable rates from the next round on.

The window is about 15 seconds of the deployments' known rate limits combined, plus 50 jobs
for each deployment whose limit is not known yet (from its first answers' headers), at most
`LLMQUEUE_BATCH_IN_FLIGHT` and never less than 50: rate-limited work then waits here, in
Postgres, instead of in the broker, where it could not be reordered.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime
from itertools import zip_longest

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.settings import get_settings
from jobstore.batch_models import Batch, BatchStatus
from jobstore.batches import HELD_UNTIL
from jobstore.db import transaction
from jobstore.models import Job, JobStatus
from routing.catalog import get_catalog
from workers import capacity
from workers.messages import send_dispatch
from workers.queues import Priority

log = logging.getLogger(__name__)
FEED_EVERY_S = 0.5
CAPACITY_HORIZON_S = 15.0
MIN_WINDOW = 50
_round = 0  # which key goes first this round: turns rotate, so no key is always last


def window(now: float) -> int:
    """How many batch jobs may be in flight at once (see the module docstring)."""
    limit = get_settings().batch_in_flight
    deployments = get_catalog().deployments
    views = capacity.store().views({n: capacity.deployment_limits(d) for n, d in deployments.items()}, now)
    if not deployments or not views:
        return limit
    # A deployment whose limit is not known yet counts for MIN_WINDOW jobs: enough to learn its
    # limit from its first answers, not a whole window sent to it before anything is known.
    known = [views[n].rpm or 0.0 for n in deployments if n in views and views[n].rpm]
    unknown = len(deployments) - len(known)
    wanted = math.ceil(sum(known) / 60 * CAPACITY_HORIZON_S) + unknown * MIN_WINDOW
    return max(MIN_WINDOW, min(limit, wanted))


def feed_once(now: datetime | None = None) -> int:
    """One round: release held batch jobs up to the window; returns how many."""
    global _round
    now = now or utcnow()
    with transaction() as session:
        active = session.execute(
            select(Batch.id, Batch.owner_id)
            .where(Batch.status == BatchStatus.IN_PROGRESS)
            .order_by(Batch.created_at)
        ).all()
    if not active:
        return 0
    # Only with batches open: the window reads every deployment's capacity from Redis, most of
    # a round's cost, twice a second in every dispatcher; outside a transaction, so no pooled
    # connection waits on Redis.
    room_total = window(now.timestamp())
    batch_ids = [b for b, _ in active]
    with transaction() as session:
        in_flight = (
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.batch_id.in_(batch_ids), Job.status.in_((JobStatus.DISPATCHED, JobStatus.RUNNING)))
                # provider-batches: a line in a provider batch is not online work (workers/economy_feeder.py)
                .where(Job.provider_batch_id.is_(None))
            )
            or 0
        )
        released = (
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.batch_id.in_(batch_ids), Job.not_before.is_(None), Job.status == JobStatus.QUEUED)
            )
            or 0
        )
        room = room_total - in_flight - released
        if room <= 0:
            return 0
        by_owner: dict[str, list[str]] = defaultdict(list)
        for batch_id, owner_id in active:
            by_owner[owner_id].append(batch_id)
        owners = sorted(by_owner)
        _round += 1
        start = _round % len(owners)
        owners = owners[start:] + owners[:start]
        ids = _fair_share(session, owners, by_owner, room)
        if not ids:
            return 0
        session.execute(
            update(Job).where(Job.id.in_(ids), Job.not_before == HELD_UNTIL).values(not_before=None)
        )
    send_dispatch(ids, priority=Priority.BATCH)
    return len(ids)


def _fair_share(session: Session, owners: list[str], batches: dict[str, list[str]], room: int) -> list[str]:
    """Up to `room` held job ids, taken in turn from each owner and, within an owner, from each
    of its batches in turn (each batch in line order); what one cannot use goes to the others."""
    per_owner = []
    for owner in owners:
        per_batch = [
            list(
                session.scalars(
                    select(Job.id)
                    .where(
                        Job.batch_id == batch_id, Job.not_before == HELD_UNTIL, Job.status == JobStatus.QUEUED
                    )
                    .order_by(Job.line_number)
                    .limit(room)
                )
            )
            for batch_id in batches[owner]
        ]
        per_owner.append(interleave(per_batch))
    return interleave(per_owner)[:room]


def interleave(lists: list[list[str]]) -> list[str]:
    """One from each list in turn: [[a1, a2], [b1]] -> [a1, b1, a2]."""
    return [item for row in zip_longest(*lists) for item in row if item is not None]
