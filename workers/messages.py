"""Every message llmqueue sends to Celery, sent from here by task name.

Plain functions in `dispatch.py`, `calls.py`, `batch_progress.py` and the API commit their
state change first and then call one of these; a message therefore never names a row that
does not exist yet, and a message lost after the commit is found again by the sweeper.
Senders import this module, never `workers/tasks.py`, so nothing reaches back into the
module that defines the tasks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from core.redis import shared_redis
from core.settings import get_settings
from jobstore.ledger import SoftAlert
from workers.celery_app import app
from workers.next_step import NextStep, SendAttempt, SendDispatch
from workers.queues import Priority, Queue, TaskName, provider_queue

DISPATCH_WINDOW = 100  # job ids per dispatch message: one message each cost more than routing
ATTEMPT_WINDOW = 100  # attempt ids per call message
CHECK_DEBOUNCE_S = 1.0


def send_step(step: NextStep) -> None:
    """Send what a committed state change asked for (nothing for `Nothing`)."""
    if isinstance(step, SendAttempt):
        send_attempts(step.provider, [step.attempt_id], countdown=step.countdown, priority=step.priority)
    elif isinstance(step, SendDispatch):
        send_dispatch([step.job_id], countdown=step.countdown, priority=step.priority)


def send_steps(steps: Iterable[NextStep]) -> None:
    """Send many steps, the attempts for one provider queue at one priority in one message."""
    grouped: dict[tuple[str, Priority], list[str]] = defaultdict(list)
    for step in steps:
        if isinstance(step, SendAttempt) and not step.countdown:
            grouped[(step.provider, step.priority)].append(step.attempt_id)
        else:
            send_step(step)
    for (provider, priority), ids in grouped.items():
        send_attempts(provider, ids, priority=priority)


def countdown_cap() -> float:
    """The longest a message may wait in the broker: under the visibility timeout, past which
    the broker would hand it out a second time. A longer wait is sent in legs (a message that
    arrives before its attempt is due is sent on for the rest)."""
    return get_settings().visibility_timeout_s * 0.5


def send_attempts(
    provider: str, attempt_ids: Sequence[str], *, countdown: float = 0.0, priority: Priority
) -> None:
    """Provider calls for one provider's workers, up to ATTEMPT_WINDOW attempts per message."""
    for start in range(0, len(attempt_ids), ATTEMPT_WINDOW):
        app.send_task(
            TaskName.CALL.value,
            args=[list(attempt_ids[start : start + ATTEMPT_WINDOW])],
            queue=provider_queue(provider),
            countdown=min(countdown, countdown_cap()) or None,
            priority=priority,
        )


def send_dispatch(
    job_ids: Sequence[str], countdown: float = 0.0, *, priority: Priority = Priority.NORMAL
) -> int:
    """Hand jobs to the dispatcher, `DISPATCH_WINDOW` ids per message; returns messages sent."""
    sent = 0
    for start in range(0, len(job_ids), DISPATCH_WINDOW):
        app.send_task(
            TaskName.DISPATCH.value,
            args=[list(job_ids[start : start + DISPATCH_WINDOW])],
            queue=Queue.DISPATCH.value,
            countdown=min(countdown, countdown_cap()) or None,
            priority=priority,
        )
        sent += 1
    return sent


def send_batch_check(batch_id: str, countdown: float = CHECK_DEBOUNCE_S) -> None:
    """Ask for a check of the batch soon; with Redis, one per batch per second however many of
    its jobs end meanwhile."""
    client = shared_redis()
    key = f"{get_settings().redis_prefix}batch-check:{batch_id}"
    if client is not None and not client.set(key, "1", nx=True, px=int(countdown * 800)):
        return  # a check is already due after this job's commit
    app.send_task(
        TaskName.BATCH_CHECK.value, args=[batch_id], queue=Queue.DISPATCH.value, countdown=countdown
    )


def send_expiry_check(batch_id: str, countdown: float) -> None:
    """One check of the batch at its expiry (not debounced with the others: it is far off);
    with Redis, one per batch however many checks ask for it."""
    client = shared_redis()
    key = f"{get_settings().redis_prefix}batch-expiry:{batch_id}"
    if client is not None and not client.set(key, "1", nx=True, px=int(countdown * 1000) + 1000):
        return
    app.send_task(
        TaskName.BATCH_CHECK.value,
        args=[batch_id],
        queue=Queue.DISPATCH.value,
        countdown=min(countdown, countdown_cap()),
    )


def send_batch_webhook(batch_id: str) -> None:
    app.send_task(TaskName.BATCH_WEBHOOK.value, args=[batch_id], queue=Queue.DISPATCH.value)


def send_alert_webhook(alert: SoftAlert) -> None:
    """A budget's soft-limit alert, for its key's alert webhook (`workers/webhooks.py`)."""
    body = {
        "budget_id": alert.budget_id,
        "owner_id": alert.owner_id,
        "batch_id": alert.batch_id,
        "spent_usd": f"{alert.spent_usd:f}",
        "soft_limit_usd": f"{alert.soft_limit_usd:f}",
        "limit_usd": f"{alert.limit_usd:f}",
    }
    app.send_task(TaskName.ALERT_WEBHOOK.value, args=[body], queue=Queue.DISPATCH.value)


def send_probe(deployment: str, provider: str, expires_s: float) -> None:
    """An active probe; one still queued by the next round says nothing new, so it expires."""
    app.send_task(TaskName.PROBE.value, args=[deployment], queue=provider_queue(provider), expires=expires_s)


def send_provider_batch_submit(pb_id: str) -> None:
    """Submit a planned provider batch to its provider."""
    app.send_task(TaskName.PROVIDER_BATCH_SUBMIT.value, args=[pb_id], queue=Queue.PROVIDER_BATCH.value)


def send_provider_batch_poll(pb_id: str) -> None:
    """Look at a submitted provider batch: cancel it if asked, poll it, write its results once it ended."""
    app.send_task(TaskName.PROVIDER_BATCH_POLL.value, args=[pb_id], queue=Queue.PROVIDER_BATCH.value)
