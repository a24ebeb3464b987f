"""Economy mode's decision before release: which held jobs of a batch go by provider batch.

A batch that may use provider batches (`jobstore.batches.economy_eligible`: an OpenAI-style
batch, whose 24h completion window is its deadline, or a document batch with a deadline or
`delivery=economy`) has its jobs stored economy-held, out of the feeder's sight. Every second one
dispatcher process (`workers/periodic.py`) takes such a batch (its row locked: one planner at a
time), routes each held job as the dispatcher would (the same routing function, without
capacity spill: a provider batch does not use the online rpm/tpm), groups the jobs by the
deployment routing chose, and asks `routing/economy.py` of each group: provider batch or
online, and why. In the same transaction:

- a group that goes by provider batch becomes one provider batch per `BatchPlan` (within the
  provider's line and byte limits, and the deployment's enqueued-token quota less what its
  provider batches not yet ended hold): each job's attempt is claimed by the provider batch,
  the lines' maximum cost at batch prices is reserved against the key's and the batch's
  budgets, and each job's routing explanation says which path and why. The provider-batch
  workers take it from there (`workers/provider_batch_runs.py`);
- every other job is released to the feeder, held as any batch job is, its routing record
  (`routing["economy"]`, shown in its explanation) saying why it goes online.

`delivery=economy` takes any saving; the default (`auto`) only one worth the wait
(`EconomyPolicy`). Jobs are planned PLAN_CHUNK at a time in line order, so a huge batch is
never held in memory whole; a crash mid-way rolls the chunk back and the next round plans it.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from core.clock import aware, utcnow
from jobstore import ledger
from jobstore import provider_batches as store
from jobstore.batch_models import Batch, BatchKind
from jobstore.batches import EconomyMode, economy_mode
from jobstore.db import transaction
from jobstore.models import Job, new_id
from routing.catalog import Catalog, get_catalog
from routing.costs import (
    MIN_OUTPUT_TOKENS,
    affordable_output,
    expected_output_tokens,
    max_batch_cost,
    reservable_input,
)
from routing.economy import (
    BatchPlan,
    EconomyDecision,
    EconomyJob,
    EconomyPolicy,
    Route,
    estimate_line_bytes,
    plan,
)
from routing.router import route
from routing.types import RoutingDecision, RoutingError, RoutingRequest
from workers.dispatch_context import DispatchContext
from workers.messages import send_provider_batch_submit

log = logging.getLogger(__name__)
PLAN_EVERY_S = 1.0
PLAN_CHUNK = 10_000
_rng = random.Random()

POLICIES = {
    EconomyMode.AUTO: EconomyPolicy(),
    # Asked for by name: any saving is worth the wait.
    EconomyMode.ECONOMY: EconomyPolicy(min_saving_usd=Decimal(0), min_saving_fraction=0.0),
}


@dataclass
class Routed:
    """A held job with its online routing decision and what planning needs of it."""

    job: Job
    decision: RoutingDecision
    economy: EconomyJob
    max_tokens: int | None


def plan_round() -> int:
    """One round: plan a chunk of every batch waiting for it; returns provider batches made."""
    with transaction() as session:
        batch_ids = store.batches_to_plan(session)
    made = 0
    for batch_id in batch_ids:
        made += len(plan_batch(batch_id))
    return made


def plan_batch(batch_id: str, *, catalog: Catalog | None = None, now: datetime | None = None) -> list[str]:
    """Plan up to PLAN_CHUNK of the batch's economy-held jobs; returns the provider batches made
    (each sent for submission after the commit)."""
    catalog = catalog or get_catalog()
    now = now or utcnow()
    with transaction() as session:
        batch = store.lock_for_planning(session, batch_id)
        if batch is None:
            return []
        jobs = store.economy_held(session, batch_id, PLAN_CHUNK)
        if not jobs:
            return []
        made = plan_jobs(session, batch, jobs, catalog, now)
    for pb_id in made:
        send_provider_batch_submit(pb_id)
    if made:
        log.info("batch %s: %d jobs planned, %d provider batches", batch_id, len(jobs), len(made))
    return made


def plan_jobs(session: Session, batch: Batch, jobs: list[Job], catalog: Catalog, now: datetime) -> list[str]:
    context = DispatchContext(session, catalog, now)
    # Every job is the batch's, so one budget scope: its headroom (reservations aside) read once.
    headroom = context.budget_headroom(batch.owner_id, batch.id)
    online: dict[str, dict[str, Any]] = {}  # job id -> its economy record, for the jobs going online
    routed: dict[str, Routed] = {}
    for index, job in enumerate(jobs):
        found = _route(job, headroom, context, catalog, now, index)
        if isinstance(found, str):
            online[job.id] = {"mode": Route.ONLINE.value, "reason": found}
        else:
            routed[job.id] = found
    deadline = _deadline(batch, jobs)
    decisions = plan(
        [r.economy for r in routed.values()],
        now=now,
        deadline=deadline,
        policy=POLICIES.get(economy_mode(batch), EconomyPolicy()),
        enqueued_in_use=store.enqueued_tokens(session),
    )
    made: list[str] = []
    for decision in decisions:
        for job_id in decision.online:
            online[job_id] = decision.explanation(job_id)
        if decision.route is not Route.PROVIDER_BATCH:
            continue
        for batch_plan in decision.batches:
            group = [routed[job_id] for job_id in batch_plan.job_ids]
            pb_id, refused = _add(session, context, batch, decision, batch_plan, group, deadline, now)
            if pb_id is not None:
                made.append(pb_id)
            online.update(refused)
    by_id = {job.id: job for job in jobs}
    store.release_online(
        session, {job_id: {**(by_id[job_id].routing or {}), "economy": r} for job_id, r in online.items()}
    )
    return made


def _route(
    job: Job, headroom: Decimal | None, context: DispatchContext, catalog: Catalog, now: datetime, index: int
) -> Routed | str:
    """The job routed as the dispatcher would route it now (its first choice), or why it was not."""
    request = RoutingRequest.for_job(job, budget_remaining_usd=headroom)
    try:
        # Round robin turns per job here, as the dispatcher's shared rotation would.
        decision = route(request, catalog, context.health, now=now.timestamp(), rng=_rng, rotation=index)
    except RoutingError as exc:  # NoRoute and the rest: the dispatcher fails the job with the reason
        return f"online: routing found no deployment now ({exc}); the dispatcher decides"
    if not decision.candidates:
        return "online: every deployment that could serve it is cooling down"
    chosen = decision.candidates[0]
    max_tokens = request.request.max_tokens
    output = expected_output_tokens(chosen.deployment.model, max_tokens, chosen.input_tokens)
    line_bytes = estimate_line_bytes(request.request)
    return Routed(
        job,
        decision,
        EconomyJob(job.id, chosen.deployment, chosen.input_tokens, output, line_bytes),
        max_tokens,
    )


def _deadline(batch: Batch, jobs: list[Job]) -> datetime | None:
    """When the jobs must be answered: an OpenAI-style batch's completion window, else the
    earliest deadline among them (None: no deadline, the provider's window is the limit)."""
    if batch.kind == BatchKind.OPENAI and batch.expires_at is not None:
        return aware(batch.expires_at)
    deadlines = [aware(j.deadline_at) for j in jobs if j.deadline_at is not None]
    return min(deadlines) if deadlines else None


def _online(reason: str) -> dict[str, Any]:
    return {"mode": Route.ONLINE.value, "reason": reason}


def _add(
    session: Session,
    context: DispatchContext,
    batch: Batch,
    decision: EconomyDecision,
    batch_plan: BatchPlan,
    group: list[Routed],
    deadline: datetime | None,
    now: datetime,
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """One provider batch for these jobs, their reservations held; returns its id (None if it
    took no job) and the jobs sent online instead, each with its economy record."""
    dep = decision.deployment
    model = dep.model
    headroom = context.budget_headroom(batch.owner_id, batch.id)
    refused: dict[str, dict[str, Any]] = {}
    pb_id = new_id("pbatch")
    lines: list[store.PlannedLine] = []
    for item in group:
        amount, cap = Decimal(0), None
        if headroom is not None:  # a budget applies: the line reserves its most at batch prices
            bounded_input = reservable_input(item.economy.input_tokens)
            limit = item.max_tokens
            if limit is None:  # and its output is capped, so the reservation bounds it
                limit = cap = affordable_output(model, bounded_input, headroom)
                if limit < min(MIN_OUTPUT_TOKENS, model.max_output_tokens):
                    refused[item.job.id] = _online(
                        "online: the budget left is too small for a provider batch"
                    )
                    continue
            amount = max_batch_cost(model, bounded_input, limit)
        record = {**decision.explanation(item.job.id), "provider_batch": pb_id}
        record.pop("batch", None)
        explanation = {**item.decision.explanation(), "economy": record}
        lines.append(
            store.PlannedLine(
                item.job.id, amount, cap, explanation, {**(item.job.routing or {}), "economy": record}
            )
        )
    reserved = sum((line.reserved_usd for line in lines), Decimal(0))
    if reserved and not ledger.reserve(session, batch.owner_id, batch.id, reserved, now):
        why = (
            f"online: the budget cannot hold this provider batch's reservation (${reserved} at batch prices)"
        )
        refused.update({line.job_id: _online(why) for line in lines})
        return None, refused
    pb_plan = store.ProviderBatchPlan(
        id=pb_id,
        batch_id=batch.id,
        owner_id=batch.owner_id,
        provider=dep.provider,
        deployment=dep.name,
        model=model.id,
        input_tokens=batch_plan.input_tokens,
        input_bytes=batch_plan.input_bytes,
        estimated_cost_usd=decision.batch_cost_usd,
        estimated_online_cost_usd=decision.online_cost_usd,
        reason=decision.reason,
        give_up_at=decision.give_up_at or now,
        deadline_at=deadline,
    )
    pb, taken = store.add_provider_batch(session, pb_plan, lines, now)
    left = reserved - sum((t.reserved_usd for t in taken), Decimal(0))
    if left > 0:  # jobs cancelled while being planned: their share of the reservation goes back
        ledger.release(session, batch.owner_id, batch.id, left)
    return (pb.id if pb is not None else None), refused
