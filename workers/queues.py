"""Every queue name in one place: the dispatcher's, and one per provider."""

from __future__ import annotations

from enum import StrEnum

from routing.catalog import PROVIDERS


class Queue(StrEnum):
    DISPATCH = "dispatch"


def provider_queue(provider: str) -> str:
    """The queue a provider's workers consume: `provider.<name>`."""
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    return f"provider.{provider}"


ALL_PROVIDER_QUEUES = tuple(provider_queue(p) for p in PROVIDERS)
ALL_QUEUES = (Queue.DISPATCH.value, *ALL_PROVIDER_QUEUES)
