"""What the shared state learns from each provider call once it has ended: the deployment's
capacity (the tokens it used, its rate-limit headers, a pause the provider asked for) and the
call's metrics. One place for the chat engine (`workers/engine.py`) and the embedding calls
(`workers/embedding_calls.py`)."""

from __future__ import annotations

import logging

from routing.catalog import Deployment
from workers import capacity, metrics
from workers.providers.errors import ProviderError, RateLimited

log = logging.getLogger(__name__)


async def report_call(
    admission: capacity.Admission,
    deployment: Deployment,
    latency_ms: float,
    error: ProviderError | None,
    *,
    used_tokens: int | None,
    headers: dict[str, str] | None,
) -> None:
    """`used_tokens` and `headers` are the answer's (None when the call failed)."""
    try:
        await capacity.after_call(
            admission,
            used_tokens=used_tokens,
            headers=headers,
            retry_after=error.retry_after if error is not None else None,
            rate_limited=isinstance(error, RateLimited),
        )
    except Exception:  # capacity is shared state, best effort: the call's outcome still counts
        log.warning("could not update the capacity of %s", deployment.name, exc_info=True)
    metrics.provider_call(deployment, latency_ms, "success" if error is None else error.kind.value, headers)
