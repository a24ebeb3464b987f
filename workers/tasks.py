"""The Celery tasks: thin, taking ids, calling the plain functions that do the work.

Retry policy is declared here, on the tasks: a database or broker hiccup retries the task
with backoff; provider errors never reach Celery (they are classified in `calls.py`, and
their retries are new attempts sent with a countdown).
"""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import worker_ready
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError

from workers.batch_tasks import after_step
from workers.calls import run_attempt
from workers.celery_app import app
from workers.dispatch import dispatch_job
from workers.next_step import NextStep, SendAttempt, SendDispatch
from workers.probes import probe_deployment, start_probe_thread
from workers.queues import Priority, Queue, provider_queue

INFRA_RETRY = {
    # Postgres or Redis away for a moment (redis-py's errors are not the builtin ConnectionError).
    "autoretry_for": (OperationalError, ConnectionError, RedisConnectionError, RedisTimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 20,
}


@app.task(name="llmqueue.dispatch", bind=True, **INFRA_RETRY)
def dispatch(self: Task, job_ids: list[str]) -> None:
    """Route each job and send it to its provider's queue. Takes several ids per message."""
    for job_id in job_ids:
        step = dispatch_job(job_id)
        send(step)
        after_step(step)


@app.task(name="llmqueue.call", bind=True, **INFRA_RETRY)
def call_provider(self: Task, attempt_id: str, deployment: str | None = None) -> None:
    """Make one attempt's provider call, then send whatever comes next. `deployment` (the
    attempt's, when the sender knew it) lets an open breaker refuse it before the claim."""
    step = run_attempt(
        attempt_id, deployment_hint=deployment
    )  # a failover comes back already routed (see calls.py)
    if isinstance(step, SendDispatch) and not step.countdown:
        step = dispatch_job(step.job_id)  # a repair: route it here, not via the dispatch queue
    send(step)
    after_step(step)


@app.task(name="llmqueue.probe", ignore_result=True)
def probe(deployment: str) -> str:
    """The optional active probe of one deployment (see workers/probes.py)."""
    return probe_deployment(deployment)


def send(step: NextStep) -> None:
    if isinstance(step, SendAttempt):
        call_provider.apply_async(
            args=[step.attempt_id],
            kwargs={"deployment": step.deployment} if step.deployment else None,
            queue=provider_queue(step.provider),
            countdown=step.countdown or None,
            priority=step.priority,
        )
    elif isinstance(step, SendDispatch):
        enqueue_dispatch([step.job_id], countdown=step.countdown, priority=step.priority)


def enqueue_dispatch(
    job_ids: list[str], countdown: float = 0.0, *, priority: Priority = Priority.NORMAL
) -> None:
    """Hand jobs to the dispatcher (the API calls this after its commit)."""
    dispatch.apply_async(
        args=[job_ids],
        queue=Queue.DISPATCH.value,
        countdown=countdown or None,
        priority=priority,
    )


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    """Dispatcher workers also sweep for stranded work (see workers/sweeper.py); every worker
    pays its cold start (database connections; SDK imports and clients in provider workers;
    the tokenizer in dispatchers) now rather than on its first jobs."""
    from jobstore.db import warm_pool

    warm_pool()
    queues = {q.name for q in sender.app.amqp.queues.consume_from.values()} if sender else set()
    providers = {q.removeprefix("provider.") for q in queues if q.startswith("provider.")}
    if Queue.DISPATCH.value in queues:
        # Jobs sent one by one come with their token count (counted by the API); a batch's
        # jobs are counted here. Provider workers route failovers with the stored count and
        # load the tokenizer's ~150 MB only if a job without one fails over.
        from core.settings import get_settings
        from routing.tokens import count_text
        from workers.sweeper import start_sweeper_thread

        count_text("warm up the tokenizer")

        start_sweeper_thread()
        if get_settings().active_probe_s > 0:
            start_probe_thread(get_settings().active_probe_s)
    if providers:
        warm_provider_clients(providers)


def warm_provider_clients(providers: set[str]) -> None:
    from core.settings import get_settings
    from routing.catalog import get_catalog
    from workers.call_loop import get_call_loop, prewarm

    settings = get_settings()
    loop = get_call_loop()
    deployments = [d for d in get_catalog().deployments.values() if d.provider in providers]
    loop.run(
        prewarm(
            loop,
            deployments,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=settings.provider_timeout_s,
        ),
        timeout=120,
    )
