"""Every queue and task name in one place: the dispatcher's queue, one per provider and the
provider-batch queue, the tasks that consume them, and the message priorities.

Messages are sent by task name (`workers/messages.py`), so a sender never imports the module
that defines the task (`workers/tasks.py`).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from core.providers import PROVIDERS, provider_spec


class Queue(StrEnum):
    DISPATCH = "dispatch"
    PROVIDER_BATCH = "provider_batch"  # submitting and polling provider batches (economy mode)


class TaskName(StrEnum):
    """Every Celery task, by the name its messages carry."""

    DISPATCH = "llmqueue.dispatch"  # route jobs; on the dispatch queue
    CALL = "llmqueue.call"  # one attempt's provider call; on its provider's queue
    PROBE = "llmqueue.probe"  # the optional active probe of one deployment; on its provider's queue
    BATCH_CHECK = "llmqueue.batch_check"  # release reduces, finalize a batch; on the dispatch queue
    BATCH_WEBHOOK = "llmqueue.batch_webhook"  # tell a batch's webhook it ended; on the dispatch queue
    # A provider batch's submission, and its polls (then its results); on the provider_batch queue.
    PROVIDER_BATCH_SUBMIT = "llmqueue.provider_batch_submit"
    PROVIDER_BATCH_POLL = "llmqueue.provider_batch_poll"
    ALERT_WEBHOOK = "llmqueue.alert_webhook"  # a budget's soft-limit alert to its key's webhook; dispatch


class Priority(IntEnum):
    """Message priority in kombu's Redis order, where a lower number is served first: each
    priority is its own Redis list (kombu's steps 0, 3, 6, 9), and a worker's BRPOP names the
    lower lists first. A batch's jobs give way to jobs submitted one by one, so an interactive
    request is not stuck behind a hundred thousand documents; within each, work for a job
    that was tried already (a retry, a failover) goes ahead of new jobs, so a failover does
    not wait behind the backlog. Brokers without priorities (the embedded SQL broker;
    RabbitMQ, whose queues are declared here without x-max-priority) ignore it.
    """

    AHEAD = 0  # a retry or failover of a job sent one by one
    NORMAL = 3  # a new job sent one by one
    BATCH_AHEAD = 6  # a retry or failover of a batch's job
    BATCH = 9  # a new job of a batch


def priority_for(*, tried_before: bool, in_batch: bool) -> Priority:
    if in_batch:
        return Priority.BATCH_AHEAD if tried_before else Priority.BATCH
    return Priority.AHEAD if tried_before else Priority.NORMAL


def provider_queue(provider: str) -> str:
    """The queue a provider's workers consume: `provider.<name>`."""
    return f"provider.{provider_spec(provider).name}"


ALL_PROVIDER_QUEUES = tuple(provider_queue(p) for p in PROVIDERS)
ALL_QUEUES = (Queue.DISPATCH.value, *ALL_PROVIDER_QUEUES, Queue.PROVIDER_BATCH.value)
