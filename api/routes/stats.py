"""/v1/stats: what this API key's jobs did: counts by status, tokens and spend by model,
provider and day, and latency percentiles of succeeded jobs.

The breakdowns by model, provider and day are GET /v1/spend's (`jobstore/spend.py`): money
under the attempt that spent it, on the day that call ended; the total and the counts by
status are the jobs' own, created since `since`.

Everything is aggregated in SQL (GROUP BY on jobs). Money stays Decimal and is returned as
strings. Percentiles use Postgres's percentile_cont; SQLite (the embedded default) has no
such aggregate, so there they are computed in Python from the latest `SQLITE_SAMPLE`
latencies, with the same linear interpolation.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from api.deps import OwnerDep, SessionDep
from api.errors import ApiError
from core.clock import aware
from jobstore.models import Job, JobStatus
from jobstore.spend import SpendDimension, spend

router = APIRouter(prefix="/v1/stats", tags=["stats"])

PERCENTILES = (0.50, 0.95, 0.99)
SQLITE_SAMPLE = 10_000


class UsageGroup(BaseModel):
    key: str = Field(description="The model, provider or day (YYYY-MM-DD, UTC) that spent it.")
    jobs: int
    input_tokens: int
    output_tokens: int
    cost_usd: str


class LatencyStats(BaseModel):
    jobs: int = Field(description="Succeeded jobs with a recorded latency.")
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    method: str = Field(description="percentile_cont (all rows) or sample (latest rows, in Python).")


class Stats(BaseModel):
    object: str = "stats"
    since: date | None
    jobs_by_status: dict[str, int]
    total: UsageGroup
    by_model: list[UsageGroup]
    by_provider: list[UsageGroup]
    by_day: list[UsageGroup]
    latency: LatencyStats


def parse_since(since: str | None) -> datetime | None:
    """An ISO date (2026-11-01) or datetime; naive values are UTC."""
    if since is None:
        return None
    try:
        parsed = datetime.fromisoformat(since)
    except ValueError:
        raise ApiError(
            422,
            f"since: expected an ISO date like 2026-11-01, got {since!r}",
            param="since",
            code="invalid_value",
        ) from None
    return aware(parsed)


def scope(owner_id: str, since: datetime | None) -> list[ColumnElement[bool]]:
    """This key's jobs, created since `since` when given."""
    conditions = [Job.owner_id == owner_id]
    return conditions if since is None else [*conditions, Job.created_at >= since]


def usage_sums() -> list[ColumnElement[Any]]:
    """Jobs, input tokens, output tokens and spend of a group."""
    return [
        func.count(),
        func.coalesce(func.sum(Job.input_tokens), 0),
        func.coalesce(func.sum(Job.output_tokens), 0),
        func.coalesce(func.sum(Job.cost_usd), 0),
    ]


def usage_by(
    session: Session, dimension: SpendDimension, owner_id: str, since: datetime | None
) -> list[UsageGroup]:
    """Spend by model, provider or day as GET /v1/spend counts it: by the attempts that spent
    (a failover's cost under the model that answered; a job that spent nothing nowhere)."""
    groups, _ = spend(session, [dimension], owner_ids=[owner_id], since=since)
    return [
        _group(g.group[dimension] or "", g.jobs, g.input_tokens, g.output_tokens, g.cost_usd) for g in groups
    ]


def _group(key: str, jobs: int, input_tokens: int, output_tokens: int, cost: Any) -> UsageGroup:
    return UsageGroup(
        key=key,
        jobs=int(jobs),
        input_tokens=int(input_tokens),
        output_tokens=int(output_tokens),
        cost_usd=f"{Decimal(cost):f}",
    )


def total_usage(session: Session, owner_id: str, since: datetime | None) -> UsageGroup:
    n, i, o, c = session.execute(select(*usage_sums()).where(*scope(owner_id, since))).one()
    return _group("total", n, i, o, c)


def interpolated_percentile(ordered: list[float], q: float) -> float:
    """percentile_cont's definition: linear interpolation between the closest ranks."""
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_stats(session: Session, owner_id: str, since: datetime | None) -> LatencyStats:
    succeeded = (Job.status == JobStatus.SUCCEEDED) & Job.latency_ms.is_not(None)
    if session.get_bind().dialect.name == "postgresql":
        cont = (func.percentile_cont(q).within_group(Job.latency_ms) for q in PERCENTILES)
        query = select(func.count(), *cont).where(succeeded, *scope(owner_id, since))
        n, *values = session.execute(query).one()
        return LatencyStats(jobs=n, **_named([_round(v) for v in values]), method="percentile_cont")
    latest = select(Job.latency_ms).where(succeeded, *scope(owner_id, since)).order_by(Job.created_at.desc())
    sample = sorted(float(v) for v in session.scalars(latest.limit(SQLITE_SAMPLE)) if v is not None)
    values = [_round(interpolated_percentile(sample, q)) if sample else None for q in PERCENTILES]
    return LatencyStats(jobs=len(sample), **_named(values), method=f"sample (latest {SQLITE_SAMPLE})")


def _named(values: list[float | None]) -> dict[str, float | None]:
    return {f"p{round(q * 100)}_ms": v for q, v in zip(PERCENTILES, values, strict=True)}


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)


@router.get("", response_model=Stats)
def read_stats(
    session: SessionDep,
    owner: OwnerDep,
    since: Annotated[str | None, Query(description="Only jobs created on or after this ISO date.")] = None,
) -> Stats:
    """This API key's jobs: by status, tokens and spend by model, provider and day, latency."""
    start = parse_since(since)
    statuses = session.execute(
        select(Job.status, func.count()).where(*scope(owner.id, start)).group_by(Job.status)
    ).all()
    return Stats(
        since=start.date() if start else None,
        jobs_by_status={str(s): int(n) for s, n in statuses},
        total=total_usage(session, owner.id, start),
        by_model=usage_by(session, SpendDimension.MODEL, owner.id, start),
        by_provider=usage_by(session, SpendDimension.PROVIDER, owner.id, start),
        by_day=usage_by(session, SpendDimension.DAY, owner.id, start),
        latency=latency_stats(session, owner.id, start),
    )
