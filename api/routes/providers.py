"""/v1/providers: live health of every deployment, grouped by provider.

Read from the shared health store (Redis, or this process's memory when embedded), the
same snapshot the dispatcher routes on: breaker state, error rate over the sliding window,
latency (EWMA, p50, p95), consecutive failures and, for an open breaker, when its cooldown
ends. Health is learned from real calls; a deployment never called shows as closed with
no samples. (`POST /v1/providers/{name}/test`, an active probe, lives in provider_test.py.)
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import OwnerDep
from routing.breaker import DeploymentHealth, breaker_blocks
from routing.catalog import Deployment, get_catalog
from workers.health import health_snapshot

router = APIRouter(prefix="/v1/providers", tags=["providers"])

ProviderStatus = Literal["healthy", "degraded", "down"]


class DeploymentHealthPublic(BaseModel):
    deployment: str
    model: str
    breaker: str = Field(description="closed, open or half_open.")
    accepting: bool = Field(description="False while an open breaker is cooling down.")
    cooldown_until: datetime | None = Field(description="When an open breaker lets probes through.")
    error_rate: float = Field(description="Failed share of calls in the sliding window.")
    consecutive_failures: int
    latency_ewma_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    samples: int = Field(description="Latency observations so far.")
    traffic_share: float = Field(
        description="Share of jobs routed at this deployment's rank: below 1 while traffic ramps "
        "back after a recovery."
    )


class ProviderHealthPublic(BaseModel):
    provider: str
    status: ProviderStatus = Field(
        description="down: every deployment refuses calls; degraded: some do, or a breaker is "
        "probing; healthy otherwise."
    )
    deployments: list[DeploymentHealthPublic]


class ProviderList(BaseModel):
    object: Literal["list"] = "list"
    checked_at: datetime
    data: list[ProviderHealthPublic]


def deployment_health(dep: Deployment, health: DeploymentHealth, now: float) -> DeploymentHealthPublic:
    return DeploymentHealthPublic(
        deployment=dep.name,
        model=dep.model.id,
        breaker=health.breaker,
        accepting=not breaker_blocks(health, now),
        cooldown_until=(
            datetime.fromtimestamp(health.open_until, UTC)
            if health.open_until is not None and health.breaker != "closed"
            else None
        ),
        error_rate=round(health.error_rate, 4),
        consecutive_failures=health.consecutive_failures,
        latency_ewma_ms=_ms(health.latency_ewma_ms),
        latency_p50_ms=_ms(health.latency_p50_ms),
        latency_p95_ms=_ms(health.latency_p95_ms),
        samples=health.samples,
        traffic_share=round(health.traffic_share, 3),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def provider_status(deployments: list[DeploymentHealthPublic]) -> ProviderStatus:
    if not any(d.accepting for d in deployments):
        return "down"
    if any(d.breaker != "closed" for d in deployments):
        return "degraded"
    return "healthy"


@router.get("", response_model=ProviderList)
def list_providers(owner: OwnerDep) -> ProviderList:
    """Live health per deployment, grouped by provider."""
    catalog = get_catalog()
    now = time.time()
    snapshot = health_snapshot(list(catalog.deployments), now)
    grouped: dict[str, list[DeploymentHealthPublic]] = {}
    for dep in sorted(catalog.deployments.values(), key=lambda d: d.name):
        grouped.setdefault(dep.provider, []).append(deployment_health(dep, snapshot[dep.name], now))
    return ProviderList(
        checked_at=datetime.fromtimestamp(now, UTC),
        data=[
            ProviderHealthPublic(provider=p, status=provider_status(deps), deployments=deps)
            for p, deps in sorted(grouped.items())
        ],
    )
