"""The Jobs pages: the key's jobs with filters, and one job in full.

A job's page shows what it asked (`GET /v1/jobs/{id}/request`), its result and tool calls,
every attempt on a timeline (retries and failovers side by side), the routing explanation
(each candidate's score and estimate, each exclusion's reason), usage and cost. Another
key's job is the API's 404, shown as such.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console.base import ConsoleRoute, ViewerDep, render
from api.console.charts import Span, timeline
from jobstore.models import JobStatus

router = APIRouter(route_class=ConsoleRoute)
PAGE = 50
FILTERS = ("status", "model", "provider", "batch_id")


@router.get("/jobs")
async def jobs_page(request: Request, who: ViewerDep) -> Response:
    filters = {k: (request.query_params.get(k) or "").strip() for k in FILTERS}
    params: dict[str, Any] = {k: v for k, v in filters.items() if v}
    params["limit"] = PAGE
    if request.query_params.get("before"):
        params["before"] = request.query_params["before"]
    page = await who.api.get("/v1/jobs", params)
    jobs = page["data"]
    more = dict(filters, before=jobs[-1]["id"]) if page["has_more"] and jobs else None
    return render(
        request,
        who,
        "jobs.html",
        jobs=jobs,
        filters=filters,
        statuses=[s.value for s in JobStatus],
        next_query={k: v for k, v in more.items() if v} if more else None,
    )


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def attempts_timeline(job: dict[str, Any]) -> Any:
    created = _time(job["created_at"])
    assert created is not None
    spans = []
    for a in job["attempts"]:
        start = _time(a["started_at"])
        if start is None:
            continue  # never started: shown in the table, not on the axis
        outcome = a["error"]["type"] if a["error"] else a["status"]
        spans.append(
            Span(
                label=f"#{a['number']} {a['deployment']}",
                status=a["status"],
                start=start,
                end=_time(a["finished_at"]),
                caption=f"#{a['number']} {a['deployment']}: {outcome}"
                + (f", {a['latency_ms']:.0f} ms" if a["latency_ms"] else ""),
            )
        )
    ends = [s.end for s in spans if s.end is not None]
    until = _time(job["finished_at"]) or max([datetime.now(UTC), *ends])
    return timeline(spans, created, until)


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: str, who: ViewerDep) -> Response:
    job, asked = await asyncio.gather(
        who.api.get(f"/v1/jobs/{job_id}"), who.api.get(f"/v1/jobs/{job_id}/request")
    )
    request_body = asked["request"]
    parameters = {k: v for k, v in request_body.items() if k != "messages"}
    return render(
        request,
        who,
        "job.html",
        job=job,
        messages=request_body.get("messages", []),
        parameters=json.dumps(parameters, indent=2) if parameters else "",
        routing=json.dumps(asked["routing"], indent=2) if asked["routing"] else "",
        tool_calls=json.dumps(job["tool_calls"], indent=2) if job["tool_calls"] else "",
        chart=attempts_timeline(job),
        open=job["status"] in ("queued", "dispatched", "running"),
    )
