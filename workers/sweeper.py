"""The sweeper: finds work whose message was lost and sends it again.

A message can be lost between a commit and its send (a crash, the broker down while the
API answered 202), or a task can die after claiming an attempt. Every such job is still
in Postgres, so a periodic sweep finds it: queued jobs nobody dispatched, attempts still
pending long after they were due, and claims whose lease ran out. Sending twice is
harmless (every transition is conditional), so the sweep needs no coordination; with
Redis, one dispatcher process sweeps each round (`workers/periodic.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select

from jobstore.db import transaction
from jobstore.models import OPEN_JOB_STATUSES, Attempt, AttemptStatus, Job, JobStatus
from workers.celery_app import app
from workers.messages import send_steps
from workers.next_step import NextStep, SendAttempt, SendDispatch
from workers.queues import ALL_QUEUES, Queue, priority_for, provider_queue

log = logging.getLogger(__name__)
# A round resends queued jobs and pending attempts only into empty queues, and expired claims
# always: a dead worker's calls are taken over within a lease and this.
SWEEP_EVERY_S = 5.0
GRACE_S = 10.0  # a queued job or pending attempt this old whose queue is empty was lost
BATCH = 1000


def find_stranded(
    now: datetime, grace_s: float = GRACE_S, idle_queues: Callable[[], set[str]] | None = None
) -> list[NextStep]:
    """Steps to resend for work that should have moved by now.

    Queued jobs and pending attempts are resent only while their queue is empty: in a big
    backlog they are still waiting in the broker, and resending them would only add
    duplicates. An expired claim is resent whatever the queue holds (`expired_claims`).
    """
    cutoff = now - timedelta(seconds=grace_s)
    idle = idle_queues() if idle_queues is not None else None
    steps: list[NextStep] = []
    with transaction() as session:
        if idle is None or Queue.DISPATCH.value in idle:
            queued = session.execute(
                select(Job.id, Job.attempt_count, Job.batch_id)
                .where(
                    Job.status == JobStatus.QUEUED,
                    Job.updated_at < cutoff,
                    or_(Job.not_before.is_(None), Job.not_before < now),
                )
                .limit(BATCH)
            )
            steps += [
                SendDispatch(
                    job_id, priority=priority_for(tried_before=tries > 0, in_batch=batch is not None)
                )
                for job_id, tries, batch in queued
            ]
        pending = (
            (Attempt.status == AttemptStatus.PENDING)
            & or_(Attempt.not_before.is_(None), Attempt.not_before < cutoff)
            & (Attempt.created_at < cutoff)
        )
        attempts = session.execute(
            select(Attempt.id, Attempt.provider, Attempt.deployment, Attempt.number, Job.batch_id)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.status.in_(OPEN_JOB_STATUSES), pending)
            .limit(BATCH)
        )
        for attempt_id, provider, deployment, number, batch in attempts:
            if idle is None or provider_queue(provider) in idle:
                priority = priority_for(tried_before=number > 1, in_batch=batch is not None)
                steps.append(SendAttempt(attempt_id, provider, priority=priority, deployment=deployment))
    return steps + expired_claims(now)


def expired_claims(now: datetime) -> list[NextStep]:
    """Calls whose worker stopped renewing their lease (it died): sent again whatever the queue
    holds, ahead of new work. Leases are judged by the database's clock where it has one."""
    with transaction() as session:
        clock = func.now() if session.get_bind().dialect.name == "postgresql" else now
        rows = session.execute(
            select(Attempt.id, Attempt.provider, Attempt.deployment, Job.batch_id)
            .join(Job, Job.id == Attempt.job_id)
            .where(
                Attempt.status == AttemptStatus.RUNNING,
                Attempt.lease_until < clock,
                Job.status.in_(OPEN_JOB_STATUSES),
            )
            .limit(BATCH)
        ).all()
    return [
        SendAttempt(
            attempt_id,
            provider,
            priority=priority_for(tried_before=True, in_batch=batch is not None),
            deployment=deployment,
        )
        for attempt_id, provider, deployment, batch in rows
    ]


def queue_depths() -> dict[str, int]:
    """Messages waiting on each queue, every priority counted (a queue never declared holds none)."""
    depths: dict[str, int] = {}
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for name in ALL_QUEUES:
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:
                depths[name] = 0
    return depths


def idle_broker_queues() -> set[str]:
    """The queues with no message waiting (a broker that cannot say counts as idle)."""
    return {name for name, waiting in queue_depths().items() if waiting == 0}


def sweep_once() -> int:
    """One full sweep: resend every stranded step; returns how many. (`workers/periodic.py` runs
    it every SWEEP_EVERY_S seconds in one dispatcher process at a time.)"""
    return _resend(find_stranded(datetime.now(UTC), idle_queues=idle_broker_queues))


def _resend(steps: list[NextStep]) -> int:
    send_steps(steps)
    if steps:
        log.warning("sweeper resent %d stranded messages", len(steps))
    return len(steps)
