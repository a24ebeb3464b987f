"""Dispatching many jobs at once: `begin_dispatch` (jobstore/transitions.py) for all the jobs
one dispatcher message routed, in one UPDATE and one INSERT on Postgres.

A dispatcher message routes up to a hundred jobs; two statements per job were most of the
dispatcher's CPU. The UPDATE is the same conditional queued -> dispatched change, so a job
dispatched by someone else meanwhile is simply not in its RETURNING rows (and gets no attempt).
The embedded SQLite takes the jobs one at a time through `begin_dispatch`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.clock import utcnow
from jobstore.models import new_id
from jobstore.transitions import INSERT_ATTEMPT, NewAttempt, begin_dispatch


@dataclass(frozen=True)
class DispatchPlan:
    """What `begin_dispatch` takes for one job, for `begin_dispatches`."""

    job_id: str
    provider: str
    model: str
    deployment: str
    explanation: dict[str, Any]
    reserved_usd: Decimal = Decimal(0)
    max_tokens: int | None = None


# transitions' `_DISPATCH_JOB` for many jobs: the values come as arrays, one element a job.
_DISPATCH_JOBS = text(
    "UPDATE jobs SET status = 'dispatched', provider = v.provider, model = v.model,"
    " deployment = v.deployment, explanation = v.explanation::json,"
    " attempt_count = jobs.attempt_count + 1, not_before = NULL, updated_at = :now"
    " FROM unnest(CAST(:ids AS text[]), CAST(:providers AS text[]), CAST(:models AS text[]),"
    " CAST(:deployments AS text[]), CAST(:explanations AS text[]))"
    " AS v(id, provider, model, deployment, explanation)"
    " WHERE jobs.id = v.id AND jobs.status = 'queued'"
    " RETURNING jobs.id, jobs.attempt_count"
)


def begin_dispatches(session: Session, plans: Sequence[DispatchPlan]) -> dict[str, NewAttempt]:
    """`begin_dispatch` for many jobs (distinct ids): on Postgres one UPDATE for all and one
    INSERT of their attempts. Returns the attempts made, by job id; a job missing from it was
    no longer queued."""
    if not plans:
        return {}
    if session.get_bind().dialect.name != "postgresql":  # the embedded SQLite: one at a time
        made = {}
        for p in plans:
            attempt = begin_dispatch(
                session,
                p.job_id,
                provider=p.provider,
                model=p.model,
                deployment=p.deployment,
                explanation=p.explanation,
                reserved_usd=p.reserved_usd,
                max_tokens=p.max_tokens,
            )
            if attempt is not None:
                made[p.job_id] = attempt
        return made
    connection = session.connection()
    numbers: dict[str, int] = {
        row[0]: row[1]
        for row in connection.execute(
            _DISPATCH_JOBS,
            {
                "ids": [p.job_id for p in plans],
                "providers": [p.provider for p in plans],
                "models": [p.model for p in plans],
                "deployments": [p.deployment for p in plans],
                "explanations": [json.dumps(p.explanation) for p in plans],
                "now": utcnow(),
            },
        )
    }
    made = {}
    rows = []
    for p in plans:
        number = numbers.get(p.job_id)
        if number is None:
            continue
        attempt = NewAttempt(new_id("att"), p.job_id, number, p.provider, p.model, p.deployment)
        made[p.job_id] = attempt
        rows.append(
            {
                "id": attempt.id,
                "job_id": p.job_id,
                "number": number,
                "provider": p.provider,
                "model": p.model,
                "deployment": p.deployment,
                "reserved_usd": p.reserved_usd,
                "max_tokens": p.max_tokens,
            }
        )
    if rows:
        connection.execute(INSERT_ATTEMPT, rows)
    return made
