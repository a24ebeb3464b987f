"""Every Celery task, each thin: it takes ids, calls the plain function that does the work, and
sends what that function asks for (`workers/messages.py`).

One house policy covers them all (`INFRA_RETRY`): Postgres or Redis away for a moment
retries the task with backoff. Provider errors never reach Celery: they are classified in
`calls.py` and decided by `policy.py`, and their retries are new attempts sent with a
countdown. Task names come from `workers.queues.TaskName`; senders use those names and never
import this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import Task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from workers.batch_progress import after_step, check_batch, deliver_webhook
from workers.celery_app import app
from workers.dispatch import dispatch_job, dispatch_jobs
from workers.engine import get_engine
from workers.messages import send_step, send_steps
from workers.next_step import NextStep, SendDispatch, ended_jobs
from workers.probes import probe_deployment
from workers.provider_batch_runs import poll as poll_provider_batch
from workers.provider_batch_runs import submit as submit_provider_batch
from workers.queues import TaskName
from workers.streams import publish_ended
from workers.webhooks import Delivery, deliver_budget_alert

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class TaskRetry:
    """How a task is retried when the infrastructure under it fails for a moment."""

    # redis-py's errors are not the builtin ConnectionError; psycopg's come as OperationalError.
    on: tuple[type[BaseException], ...] = (
        OperationalError,
        PoolTimeoutError,  # no pooled connection within LLMQUEUE_DB_POOL_TIMEOUT_S
        ConnectionError,
        RedisConnectionError,
        RedisTimeoutError,
    )
    backoff_max_s: int = 60
    max_retries: int = 20

    def options(self) -> dict[str, Any]:
        return {
            "autoretry_for": self.on,
            "retry_backoff": True,
            "retry_backoff_max": self.backoff_max_s,
            "retry_jitter": True,
            "max_retries": self.max_retries,
        }


INFRA_RETRY = TaskRetry()
WEBHOOK_RETRIES = 6


def house_task(name: TaskName, retry: TaskRetry | None = INFRA_RETRY) -> Callable[[F], F]:
    """A task under the house policy: bound, named from `TaskName`, retried per `retry`."""

    def register(fn: F) -> F:
        options = retry.options() if retry is not None else {}
        task: F = app.task(name=name.value, bind=True, **options)(fn)
        return task

    return register


@house_task(TaskName.DISPATCH)
def dispatch(self: Task, job_ids: list[str]) -> None:
    """Route these jobs (in one transaction) and send them to their providers' queues."""
    steps = dispatch_jobs(job_ids)
    send_steps(steps)
    for step in steps:
        after_step(step)
    publish_ended(ended_jobs(steps))


@house_task(TaskName.CALL)
def call_provider(self: Task, attempt_ids: list[str] | str, deployment: str | None = None) -> None:
    """Claim these attempts and start their provider calls on this process's engine (it waits
    for room first); the calls' outcomes are written by the engine. Sends whatever the
    attempts that could not be claimed need (a repair is routed here, not via the dispatch
    queue). `deployment` is the sender's hint, kept for messages sent before it was unused."""
    ids = [attempt_ids] if isinstance(attempt_ids, str) else attempt_ids
    taken: list[NextStep] = []
    for step in get_engine().accept(ids):
        if isinstance(step, SendDispatch) and not step.countdown:
            step = dispatch_job(step.job_id)
        send_step(step)
        after_step(step)
        taken.append(step)
    publish_ended(ended_jobs(taken))  # jobs ended here (a revoked key's): tell their waiters


@house_task(TaskName.PROBE, retry=None)  # a probe lost is replaced by the next round's
def probe(self: Task, deployment: str) -> str:
    """The optional active probe of one deployment (see workers/probes.py)."""
    return probe_deployment(deployment)


@house_task(TaskName.BATCH_CHECK)
def batch_check(self: Task, batch_id: str) -> str:
    """Release a batch's ready reduces; finalize it when no job is open."""
    return check_batch(batch_id)


@house_task(TaskName.BATCH_WEBHOOK)
def batch_webhook(self: Task, batch_id: str) -> None:
    """Deliver a batch's webhook, retrying with backoff (2, 4, 8 ... s) while the receiver fails."""
    _retry_webhook(self, deliver_webhook(batch_id))


@house_task(TaskName.PROVIDER_BATCH_SUBMIT)
def provider_batch_submit(self: Task, pb_id: str) -> str:
    """Submit a planned provider batch to its provider (workers/provider_batch_runs.py)."""
    return submit_provider_batch(pb_id)


@house_task(TaskName.PROVIDER_BATCH_POLL)
def provider_batch_poll(self: Task, pb_id: str) -> str:
    """Cancel a provider batch if asked, poll it, and write its results once it ended."""
    return poll_provider_batch(pb_id)


@house_task(TaskName.ALERT_WEBHOOK)
def alert_webhook(self: Task, alert: dict[str, Any]) -> None:
    """Tell a key's alert webhook its budget passed the soft limit, retried like a batch's."""
    _retry_webhook(self, deliver_budget_alert(alert))


def _retry_webhook(task: Task, result: Delivery) -> None:
    if not result.delivered and result.retry and task.request.retries < WEBHOOK_RETRIES:
        raise task.retry(countdown=2 ** (task.request.retries + 1))
