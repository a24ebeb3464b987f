"""/v1/providers: live health of every deployment, grouped by provider.

Read from the shared health store (Redis, or this process's memory when embedded), the
same snapshot the dispatcher routes on: breaker state, error rate over the sliding window,
latency (EWMA, p50, p95), consecutive failures and, for an open breaker, when its cooldown
ends. Health is learned from real calls; a deployment never called shows as closed with
no samples. (`POST /v1/providers/{name}/test`, an active probe, lives in provider_test.py.)

What a key sees depends on its role. An admin sees every deployment's full health (breaker,
error rate, latencies, sample counts, traffic share): operator data, drawn from every key's
traffic. A member sees only what helps it choose and wait: each provider's status and, per
model, whether it can be called now and, when not, when it is expected back. No deployment
names, error rates, latencies or call counts (they reflect other keys' usage), and never a
base URL or credential (nobody sees those here).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import OwnerDep, is_admin
from routing.breaker import DeploymentHealth, breaker_blocks
from routing.catalog import Deployment, get_catalog
from workers import capacity
from workers.health import health_snapshot
from workers.providers.base import unavailable_deployments

router = APIRouter(prefix="/v1/providers", tags=["providers"])

ProviderStatus = Literal["healthy", "degraded", "down"]


class CapacityPublic(BaseModel):
    """A deployment's rate limits in force and their use (workers/capacity.py)."""

    rpm: float | None = Field(description="Requests per minute in force: the catalog's, else learned.")
    tpm: float | None = Field(description="Tokens per minute in force: the catalog's, else learned.")
    learned_rpm: float | None = Field(description="What the provider's rate-limit headers announced.")
    learned_tpm: float | None
    max_concurrency: int | None
    next_slot_in_s: float = Field(description="How far ahead the earliest free slot is booked.")
    queued: int = Field(description="Calls sent to it that have not started yet.")
    in_flight: int = Field(description="Calls in flight (counted where max_concurrency is set).")
    paused_for_s: float = Field(description="A 429's Retry-After or an exhausted window, still to run.")


class DeploymentHealthPublic(BaseModel):
    deployment: str
    model: str
    configured: bool = Field(description="Whether this deployment can be called from here at all.")
    not_configured: str | None = Field(description="When it cannot: what to set (a key, an endpoint).")
    breaker: str = Field(description="closed, open or half_open.")
    accepting: bool = Field(description="False while an open breaker is cooling down, or not configured.")
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
    capacity: CapacityPublic | None = None


class ProviderHealthPublic(BaseModel):
    provider: str
    status: ProviderStatus = Field(
        description="down: every deployment refuses calls; degraded: some do, or a breaker is "
        "probing; healthy otherwise."
    )
    deployments: list[DeploymentHealthPublic]


class ProviderList(BaseModel):
    """The admin's view: every deployment's health."""

    object: Literal["list"] = "list"
    view: Literal["admin"] = "admin"
    checked_at: datetime
    data: list[ProviderHealthPublic]


class ModelAvailability(BaseModel):
    model: str
    available: bool = Field(description="Some deployment of the model takes calls now.")
    back_at: datetime | None = Field(
        description="When unavailable: when the first of its deployments takes calls again."
    )


class ProviderSummary(BaseModel):
    provider: str
    status: ProviderStatus
    models: list[ModelAvailability]


class ProviderSummaryList(BaseModel):
    """A member's view: each provider's status and which of its models can be called now."""

    object: Literal["list"] = "list"
    view: Literal["member"] = "member"
    checked_at: datetime
    data: list[ProviderSummary]


def deployment_health(
    dep: Deployment,
    health: DeploymentHealth,
    now: float,
    view: capacity.CapacityView | None = None,
    not_configured: str | None = None,
) -> DeploymentHealthPublic:
    return DeploymentHealthPublic(
        deployment=dep.name,
        model=dep.model.id,
        configured=not_configured is None,
        not_configured=not_configured,
        breaker=health.breaker,
        accepting=not_configured is None and not breaker_blocks(health, now),
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
        capacity=None
        if view is None
        else CapacityPublic(
            rpm=view.rpm,
            tpm=view.tpm,
            learned_rpm=view.learned_rpm,
            learned_tpm=view.learned_tpm,
            max_concurrency=dep.spec.max_concurrency,
            next_slot_in_s=round(view.next_slot_in_s, 3),
            queued=view.queued,
            in_flight=view.in_flight,
            paused_for_s=round(view.paused_for_s, 3),
        ),
    )


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def provider_status(deployments: list[DeploymentHealthPublic]) -> ProviderStatus:
    if not any(d.accepting for d in deployments):
        return "down"
    if any(d.breaker != "closed" for d in deployments):
        return "degraded"
    return "healthy"


@router.get("", response_model=ProviderList | ProviderSummaryList)
def list_providers(owner: OwnerDep) -> ProviderList | ProviderSummaryList:
    """Live health: per deployment for an admin key; per provider and model for a member."""
    catalog = get_catalog()
    now = time.time()
    snapshot = health_snapshot(list(catalog.deployments), now)
    limits = {name: capacity.deployment_limits(d) for name, d in catalog.deployments.items()}
    views = capacity.store().views(limits, now)
    missing = unavailable_deployments()
    grouped: dict[str, list[DeploymentHealthPublic]] = {}
    for dep in sorted(catalog.deployments.values(), key=lambda d: d.name):
        public = deployment_health(dep, snapshot[dep.name], now, views.get(dep.name), missing.get(dep.name))
        grouped.setdefault(dep.provider, []).append(public)
    checked_at = datetime.fromtimestamp(now, UTC)
    if not is_admin(owner):
        return ProviderSummaryList(
            checked_at=checked_at,
            data=[
                ProviderSummary(provider=p, status=provider_status(deps), models=model_availability(deps))
                for p, deps in sorted(grouped.items())
            ],
        )
    return ProviderList(
        checked_at=checked_at,
        data=[
            ProviderHealthPublic(provider=p, status=provider_status(deps), deployments=deps)
            for p, deps in sorted(grouped.items())
        ],
    )


def model_availability(deployments: list[DeploymentHealthPublic]) -> list[ModelAvailability]:
    by_model: dict[str, list[DeploymentHealthPublic]] = {}
    for dep in deployments:
        by_model.setdefault(dep.model, []).append(dep)
    result = []
    for model, deps in sorted(by_model.items()):
        available = any(d.accepting for d in deps)
        waits = [d.cooldown_until for d in deps if d.cooldown_until is not None]
        result.append(
            ModelAvailability(
                model=model, available=available, back_at=None if available else min(waits, default=None)
            )
        )
    return result
