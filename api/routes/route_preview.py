"""POST /v1/route/preview: how a job would be routed now, without enqueuing it.

The body is exactly POST /v1/jobs's. It is first checked as a submission is (same 4xx for
the same mistakes), then routed as the dispatcher would route it at this moment: with the
owner's remaining budget and the live health snapshot, so open breakers show up as
exclusions and the `performance` strategy ranks on observed latency. Round robin is
previewed from rotation 0: peeking must not advance the shared counter.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import OwnerDep, SessionDep
from api.job_intake import draft_job, owner_budget
from api.schemas.jobs import JobCreate
from api.validation import check_routable
from routing.catalog import get_catalog
from routing.router import route
from routing.types import RoutingRequest
from workers.health import health_snapshot
from workers.providers.base import unavailable_deployments

router = APIRouter(prefix="/v1/route", tags=["routing"])


class RoutePreview(BaseModel):
    object: Literal["route.preview"] = "route.preview"
    strategy: str
    chosen: dict[str, Any] | None = Field(description="The first candidate: where the job would go now.")
    candidates: list[dict[str, Any]] = Field(description="Ranked best first, with scores and estimates.")
    excluded: list[dict[str, Any]] = Field(description="Deployments filtered out, each with its reason.")
    waits_until: datetime | None = Field(
        description="When every eligible deployment is cooling down: the earliest reopening."
    )


@router.post(
    "/preview",
    response_model=RoutePreview,
    responses={422: {"description": "Invalid request, unknown model, or nothing can serve it"}},
)
def preview_route(body: JobCreate, session: SessionDep, owner: OwnerDep) -> RoutePreview:
    """The ranking and explanation for this request with current health; nothing is enqueued."""
    catalog = get_catalog()
    budget = owner_budget(session, owner)
    request = body.chat_request()
    job = draft_job(owner, body, request)
    check_routable(job, catalog, budget, request)  # the submission's own checks and error messages
    now = time.time()
    decision = route(
        RoutingRequest.for_job(
            job, request=request, budget_remaining_usd=budget, unavailable=unavailable_deployments()
        ),
        catalog,
        lambda names: health_snapshot(names, now),
        now=now,
        rng=random.Random(),
        rotation=0,
    )
    explanation = decision.explanation()
    return RoutePreview(
        strategy=decision.strategy,
        chosen=explanation["candidates"][0] if explanation["candidates"] else None,
        candidates=explanation["candidates"],
        excluded=explanation["excluded"],
        waits_until=datetime.fromtimestamp(decision.retry_at, UTC) if decision.retry_at else None,
    )
