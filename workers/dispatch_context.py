"""What the dispatcher knows while it routes one message's jobs, read once for all of them.

Deployments' health (one Redis read), their capacity (how long a call sent now would wait),
which keys and batches have budgets, and which keys were revoked: read at the first job that
needs them and reused for the rest of the message. Capacity also counts the jobs this
message has already sent to a deployment, so a hundred jobs routed together spread out
instead of all taking the first choice. Reservations against budgets are made here, per job,
in the dispatcher's transaction (`reserve`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.clock import aware
from jobstore import ledger
from jobstore.models import ApiKey, Budget, Job
from routing.breaker import DeploymentHealth
from routing.catalog import Catalog, Deployment
from routing.costs import MIN_OUTPUT_TOKENS, affordable_output, max_cost, reservable_input
from routing.types import Candidate
from workers import capacity, health

KEYS_CACHE_S = 2.0  # a revoked key's jobs stop being dispatched within this (plus a message)
_revoked: dict[str, tuple[float, bool]] = {}
BUDGETS_CACHE_S = 1.0
_budget_scopes: tuple[float, set[tuple[str, str | None]]] = (-1e9, set())


class Held(StrEnum):
    """Why a job was not dispatched now although it may be later."""

    BUDGET_BUSY = "budget_busy"  # reservations in flight fill the budget; they settle soon


@dataclass
class Reservation:
    amount: Decimal = Decimal(0)
    max_tokens: int | None = None  # the output cap the call is made with, when the budget sets it


@dataclass
class DispatchContext:
    session: Session
    catalog: Catalog
    now: datetime
    _health: dict[str, DeploymentHealth] = field(default_factory=dict)
    _capacity: dict[str, capacity.CapacityView] | None = None
    _sent: dict[str, int] = field(default_factory=dict)
    _budgets: set[tuple[str, str | None]] | None = None

    # ------------------------------------------------------------ health and capacity

    def health(self, names: Iterable[str]) -> Mapping[str, DeploymentHealth]:
        """The named deployments' health, each read from the store once per context: only the
        candidates routing asks about (a lone job's few, not the whole catalog's)."""
        names = [n for n in names if n in self.catalog.deployments]
        missing = [n for n in names if n not in self._health]
        if missing:
            self._health.update(health.health_snapshot(missing, self.now.timestamp()))
        return {n: self._health[n] for n in names}

    def waits(self, candidates: Iterable[Candidate]) -> dict[str, float]:
        """Each candidate's expected wait for a free slot, counting what this message sent it."""
        if self._capacity is None:
            limits = {name: capacity.deployment_limits(d) for name, d in self.catalog.deployments.items()}
            self._capacity = capacity.store().views(limits, self.now.timestamp())
        waits = {}
        for candidate in candidates:
            name = candidate.deployment.name
            view = self._capacity.get(name)
            if view is None:
                continue
            per_call = 60.0 / view.rpm if view.rpm else 0.0
            waits[name] = view.expected_wait_s() + self._sent.get(name, 0) * per_call
        return waits

    def sent(self, deployment: str) -> None:
        self._sent[deployment] = self._sent.get(deployment, 0) + 1

    def unsent(self, deployment: str) -> None:
        """A counted send that did not happen (its job was dispatched by someone else)."""
        self._sent[deployment] = self._sent.get(deployment, 0) - 1

    @property
    def sent_counts(self) -> dict[str, int]:
        return dict(self._sent)

    # ------------------------------------------------------------ keys and budgets

    def revoked(self, jobs: Iterable[Job]) -> set[str]:
        """The owners among these jobs' whose key is revoked (cached briefly per process)."""
        owners = {job.owner_id for job in jobs}
        clock = time.monotonic()
        stale = [o for o in owners if clock - _revoked.get(o, (-1e9, False))[0] > KEYS_CACHE_S]
        if stale:
            rows = self.session.execute(select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.id.in_(stale)))
            for key_id, revoked_at in rows:
                _revoked[key_id] = (clock, revoked_at is not None)
        return {o for o in owners if _revoked.get(o, (0.0, False))[1]}

    def has_budget(self, owner_id: str, batch_id: str | None) -> bool:
        """Whether a budget applies (the key's, or its batch's). Which keys and batches have one is
        read at most every BUDGETS_CACHE_S per process; a budget's amounts are always read fresh."""
        if self._budgets is None:
            global _budget_scopes
            clock = time.monotonic()
            if clock - _budget_scopes[0] > BUDGETS_CACHE_S:
                rows = self.session.execute(select(Budget.owner_id, Budget.batch_id))
                _budget_scopes = (clock, {(owner, batch) for owner, batch in rows})
            self._budgets = _budget_scopes[1]
        return (owner_id, None) in self._budgets or (
            batch_id is not None and (owner_id, batch_id) in self._budgets
        )

    def budget_headroom(self, owner_id: str, batch_id: str | None) -> Decimal | None:
        """limit - spent under the tightest budget in scope (in-flight reservations aside)."""
        if not self.has_budget(owner_id, batch_id):
            return None
        rows = self.session.execute(
            select(Budget.limit_usd, Budget.spent_usd, Budget.period, Budget.period_start).where(
                Budget.owner_id == owner_id,
                or_(Budget.batch_id.is_(None), Budget.batch_id == batch_id),
            )
        ).all()
        starts = ledger.period_starts(self.now)
        headroom: Decimal | None = None
        for limit, spent, period, period_start in rows:
            boundary = starts.get(f"p_{period}")
            spent_now = (
                Decimal(0) if boundary is not None and aware(period_start) < boundary else Decimal(spent)
            )
            left = Decimal(limit) - spent_now
            headroom = left if headroom is None else min(headroom, left)
        return headroom

    def reserve(
        self, job: Job, chosen: Deployment, input_tokens: int, max_tokens: int | None
    ) -> Reservation | Held | None:
        """Hold the call's maximum cost against the key's (and batch's) budget. A Reservation
        (nothing to hold without a budget); Held when in-flight reservations fill the budget
        for now; None when the budget cannot cover this call at all."""
        headroom = self.budget_headroom(job.owner_id, job.batch_id)
        if headroom is None:
            return Reservation()
        model = chosen.model
        held_input = reservable_input(input_tokens)
        cap = max_tokens
        if cap is None:
            cap = affordable_output(model, held_input, headroom)
            if cap < min(MIN_OUTPUT_TOKENS, model.max_output_tokens):
                return None
        amount = max_cost(model, held_input, cap)
        if amount > headroom:
            return None
        if not ledger.reserve(self.session, job.owner_id, job.batch_id, amount, self.now):
            return Held.BUDGET_BUSY
        return Reservation(amount, cap if max_tokens is None else None)
