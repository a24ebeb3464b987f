"""GET /metrics: Prometheus's text format, from the official client.

The figures that live in Postgres, Redis and the broker are computed at each scrape
(`workers/metrics.py`, which defines every metric); each worker process serves its own
call latencies, retries and failovers on its `LLMQUEUE_METRICS_PORT`. With
`LLMQUEUE_METRICS_TOKEN` set, a scrape must send it as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
from functools import cache
from typing import Annotated

from fastapi import APIRouter, Header
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.errors import ApiError
from core.settings import get_settings
from workers.metrics import api_registry

router = APIRouter(tags=["metrics"])


@cache
def registry() -> CollectorRegistry:
    return api_registry()


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
    """Jobs by status, tokens and spend per model and provider, queue depths, breaker states."""
    token = get_settings().metrics_token
    if token is not None and not hmac.compare_digest(authorization or "", f"Bearer {token}"):
        raise ApiError(
            401,
            "send 'Authorization: Bearer <LLMQUEUE_METRICS_TOKEN>'",
            param="Authorization",
            code="invalid_token",
        )
    body = await run_in_threadpool(generate_latest, registry())
    return Response(body, media_type=CONTENT_TYPE_LATEST)
