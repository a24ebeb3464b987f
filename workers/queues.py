"""Every queue name in one place: the dispatcher's, and one per provider; and the three
message priorities."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from routing.catalog import PROVIDERS


class Queue(StrEnum):
    DISPATCH = "dispatch"


class Priority(IntEnum):
    """Message priority in kombu's Redis order, where a lower number is served first: each
    priority is its own Redis list, and a worker's BRPOP names the lower lists first. Work for
    a job that was tried already (retries, failovers) goes AHEAD of new jobs, so a failover
    does not wait behind the backlog; a batch's jobs give way to jobs submitted one by one,
    so an interactive request is not stuck behind a hundred thousand documents. Brokers
    without priorities (the embedded SQL broker; RabbitMQ, whose queues are declared here
    without x-max-priority) ignore it and serve in order.
    """

    AHEAD = 0
    NORMAL = 3
    BATCH = 6


def provider_queue(provider: str) -> str:
    """The queue a provider's workers consume: `provider.<name>`."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    return f"provider.{provider}"


ALL_PROVIDER_QUEUES = tuple(provider_queue(p) for p in PROVIDERS)
ALL_QUEUES = (Queue.DISPATCH.value, *ALL_PROVIDER_QUEUES)
