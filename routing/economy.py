"""Economy mode's planning: whether a group of jobs goes through its provider's batch API (about
half the price, answered within a window) or online, how it is split into provider batches,
and why, in words for each job's routing record. Pure: no I/O, and `now` is given.

A group is jobs routed to one deployment (a provider batch names one model). `plan_group`
decides it, in this order:

1. the provider must have a batch API in llmqueue (`core/provider_batches.py`) and the model
   batch prices in the catalog;
2. the deadline must leave the provider time: its whole window (24h) when it can, else at
   least `EconomyPolicy.min_batch_time_s`, always keeping back enough time to run the lines
   online again (`fallback_s`: the deployment's rpm/tpm over the group, times a safety
   factor, plus a floor). `give_up_at` is when the batch is cancelled and its unfinished
   lines go online: the window's end, or earlier when the deadline asks;
3. the jobs are split into batches within the provider's lines and bytes per batch and the
   deployment's enqueued-token quota; a job that fits in none goes online, saying why;
4. the saving (online estimate minus batch estimate) must be worth a wait
   (`min_saving_usd`, `min_saving_fraction`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from core.provider_batches import BatchLimits, provider_batch_spec
from core.types import ChatRequest
from routing.catalog import Deployment
from routing.costs import estimate_batch_cost, estimate_cost

# Per-line framing around the request body (custom_id, method, url, keys), for `estimate_line_bytes`.
LINE_OVERHEAD_BYTES = 200


class Route(StrEnum):
    PROVIDER_BATCH = "provider_batch"
    ONLINE = "online"


@dataclass(frozen=True)
class EconomyJob:
    job_id: str
    deployment: Deployment
    input_tokens: int  # as counted for this provider (routing/tokens.py)
    output_tokens: int  # expected (costs.expected_output_tokens)
    line_bytes: int  # the line as the provider's input carries it (a batch client's encode_line)


@dataclass(frozen=True)
class EconomyPolicy:
    min_saving_usd: Decimal = Decimal("0.01")  # a group saving less is not worth the wait
    min_saving_fraction: float = 0.10  # nor one saving less than this share of the online cost
    fallback_floor_s: float = 3600.0  # always kept before the deadline to run lines online again
    fallback_safety: float = 2.0  # times the group's estimated online duration
    min_batch_time_s: float = 3600.0  # a provider batch given less than this is not worth it


@dataclass(frozen=True)
class BatchPlan:
    """One provider batch to submit: its jobs in order, their input tokens and input bytes."""

    job_ids: tuple[str, ...]
    input_tokens: int
    input_bytes: int


@dataclass(frozen=True)
class EconomyDecision:
    route: Route
    deployment: Deployment
    reason: str  # the group's decision, in words
    batches: tuple[BatchPlan, ...] = ()
    online: Mapping[str, str] = field(default_factory=dict)  # job id -> why it goes online
    batch_cost_usd: Decimal = Decimal(0)  # estimated, of the jobs in batches
    online_cost_usd: Decimal = Decimal(0)  # the same jobs' estimated online cost
    give_up_at: datetime | None = None  # unfinished lines are cancelled and go online then

    def explanation(self, job_id: str) -> dict[str, Any]:
        """The job's part of the decision, JSON-serializable, for its routing record."""
        dep = self.deployment
        record: dict[str, Any] = {"deployment": dep.name, "model": dep.model.id, "provider": dep.provider}
        for index, plan in enumerate(self.batches):
            if job_id in plan.job_ids:
                return {
                    **record,
                    "mode": Route.PROVIDER_BATCH.value,
                    "batch": index,
                    "reason": self.reason,
                    "give_up_at": _iso(self.give_up_at) if self.give_up_at else None,
                }
        return {**record, "mode": Route.ONLINE.value, "reason": self.online.get(job_id, self.reason)}


def estimate_line_bytes(request: ChatRequest) -> int:
    """A batch line's size before a batch client has encoded it: the request's JSON plus framing."""
    return len(request.model_dump_json(exclude_none=True).encode()) + LINE_OVERHEAD_BYTES


def online_duration_s(jobs: Sequence[EconomyJob], deployment: Deployment) -> float:
    """How long the jobs take online at the deployment's rpm and tpm (0 when it states neither)."""
    spec = deployment.spec
    by_requests = len(jobs) / spec.rpm * 60 if spec.rpm else 0.0
    tokens = sum(j.input_tokens + j.output_tokens for j in jobs)
    by_tokens = tokens / spec.tpm * 60 if spec.tpm else 0.0
    return max(by_requests, by_tokens)


def enqueued_quota(deployment: Deployment, limits: BatchLimits) -> int | None:
    """The deployment's enqueued-token quota for batches: its own, else the provider's; None: none."""
    return deployment.spec.batch_enqueued_tokens or limits.enqueued_tokens


def split_into_batches(
    jobs: Sequence[EconomyJob], limits: BatchLimits, enqueued_free: int | None = None
) -> tuple[list[BatchPlan], dict[str, str]]:
    """The jobs in order, packed into batches within the lines and bytes a batch takes, while
    their input tokens fit `enqueued_free` (None: no quota). Returns the batches and the jobs
    that fit none, each with why."""
    batches: list[BatchPlan] = []
    left_out: dict[str, str] = {}
    ids: list[str] = []
    tokens = size = 0
    free = enqueued_free
    for job in jobs:
        line_size = job.line_bytes + 1  # and its newline
        if line_size > limits.max_bytes:
            left_out[job.job_id] = (
                f"online: its request is {job.line_bytes} bytes, more than a provider batch takes "
                f"({limits.max_bytes})"
            )
            continue
        if free is not None and job.input_tokens > free:
            left_out[job.job_id] = (
                f"online: the enqueued-token quota of {job.deployment.name} is full "
                f"({job.input_tokens} tokens needed, {max(free, 0)} free)"
            )
            continue
        full = limits.max_lines is not None and len(ids) >= limits.max_lines
        if ids and (full or size + line_size > limits.max_bytes):
            batches.append(BatchPlan(tuple(ids), tokens, size))
            ids, tokens, size = [], 0, 0
        ids.append(job.job_id)
        tokens += job.input_tokens
        size += line_size
        if free is not None:
            free -= job.input_tokens
    if ids:
        batches.append(BatchPlan(tuple(ids), tokens, size))
    return batches, left_out


def plan_group(
    jobs: Sequence[EconomyJob],
    *,
    now: datetime,
    deadline: datetime | None,
    policy: EconomyPolicy = EconomyPolicy(),
    enqueued_in_use: int = 0,
) -> EconomyDecision:
    """Provider batch or online for jobs of one deployment (see the module docstring)."""
    if not jobs:
        raise ValueError("plan_group needs at least one job")
    dep = jobs[0].deployment
    if any(j.deployment.name != dep.name for j in jobs):
        raise ValueError("plan_group plans jobs of one deployment; group them first (plan)")

    def online(reason: str) -> EconomyDecision:
        return EconomyDecision(Route.ONLINE, dep, reason, online={j.job_id: reason for j in jobs})

    spec = provider_batch_spec(dep.provider)
    if spec is None:
        return online(f"online: {dep.provider} has no batch API in llmqueue")
    model = dep.model
    if not model.has_batch_prices:
        return online(f"online: {model.id} has no batch prices in the catalog")
    limits = spec.limits
    window = timedelta(seconds=limits.window_s)
    fallback = timedelta(
        seconds=policy.fallback_floor_s + policy.fallback_safety * online_duration_s(jobs, dep)
    )
    if deadline is None:
        give_up_at = now + window
        timing = f"no deadline: the provider's {_span(window)} window"
    else:
        available = deadline - now - fallback
        if available >= window:
            give_up_at = now + window
            timing = (
                f"deadline {_iso(deadline)} allows the {_span(window)} window "
                f"and {_span(fallback)} for online fallback"
            )
        elif available.total_seconds() >= policy.min_batch_time_s:
            give_up_at = deadline - fallback
            timing = (
                f"deadline {_iso(deadline)} allows {_span(available)} of the {_span(window)} window: "
                f"lines not done by {_iso(give_up_at)} go online"
            )
        else:
            return online(
                f"online: deadline {_iso(deadline)} leaves {_span(max(available, timedelta(0)))} after "
                f"{_span(fallback)} kept for online fallback, less than the "
                f"{_span(timedelta(seconds=policy.min_batch_time_s))} a provider batch needs"
            )
    quota = enqueued_quota(dep, limits)
    free = None if quota is None else quota - enqueued_in_use
    batches, left_out = split_into_batches(jobs, limits, free)
    batched = [j for j in jobs if j.job_id not in left_out]
    if not batched:
        return EconomyDecision(Route.ONLINE, dep, "online: no job fits a provider batch", online=left_out)
    batch_cost = sum(
        (estimate_batch_cost(model, j.input_tokens, j.output_tokens) for j in batched), Decimal(0)
    )
    online_cost = sum((estimate_cost(model, j.input_tokens, j.output_tokens) for j in batched), Decimal(0))
    saving = online_cost - batch_cost
    if saving < policy.min_saving_usd or saving < online_cost * Decimal(str(policy.min_saving_fraction)):
        return online(
            f"online: a provider batch would save {_usd(saving)} ({_usd(batch_cost)} vs {_usd(online_cost)} "
            f"online), not worth the wait"
        )
    reason = (
        f"provider batch: {dep.provider} batch API at {_usd(batch_cost)} vs {_usd(online_cost)} online "
        f"for {len(batched)} jobs in {len(batches)} batch{'es' if len(batches) > 1 else ''}; {timing}"
    )
    return EconomyDecision(
        Route.PROVIDER_BATCH,
        dep,
        reason,
        batches=tuple(batches),
        online=left_out,
        batch_cost_usd=batch_cost,
        online_cost_usd=online_cost,
        give_up_at=give_up_at,
    )


def plan(
    jobs: Iterable[EconomyJob],
    *,
    now: datetime,
    deadline: datetime | None,
    policy: EconomyPolicy = EconomyPolicy(),
    enqueued_in_use: Mapping[str, int] | None = None,
) -> list[EconomyDecision]:
    """`plan_group` for each deployment's jobs, in the order deployments first appear;
    `enqueued_in_use`: input tokens already enqueued in provider batches, by deployment name."""
    groups: dict[str, list[EconomyJob]] = {}
    for job in jobs:
        groups.setdefault(job.deployment.name, []).append(job)
    in_use = enqueued_in_use or {}
    return [
        plan_group(group, now=now, deadline=deadline, policy=policy, enqueued_in_use=in_use.get(name, 0))
        for name, group in groups.items()
    ]


def _usd(amount: Decimal) -> str:
    """Dollars to the cent from a dollar up, else to six decimals (a line costs fractions of a cent)."""
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    text = f"{amount:.6f}".rstrip("0").rstrip(".")
    return f"${text if text not in ('', '-0') else '0'}"


def _span(delta: timedelta) -> str:
    """24h, 23h58min, 45min (to the minute, rounded down: never more time than there is)."""
    minutes = int(delta.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest}min"
    return f"{hours}h" + (f"{rest:02d}min" if rest else "")


def _iso(moment: datetime) -> str:
    """2026-12-02T10:00Z (UTC, to the minute) for an aware time; naive times are taken as UTC."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%dT%H:%MZ")
