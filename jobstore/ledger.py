"""The money ledger: budgets that cannot be overshot, by reservation.

A key's budget (and a batch's `max_cost_usd`) is a `budgets` row holding what settled calls
spent in the current period and what calls in flight may still cost at most. Before a call
its maximum cost is reserved with one conditional UPDATE per budget that refuses when
spent + reserved + this would pass the limit; the result settles the real cost in the
transaction that writes it; a failure or a cancel releases the reservation. However many
workers reserve at once, Postgres serialises the updates of one row, so the sum of what is
spent never passes the limit.

Periods reset at UTC boundaries (a day at 00:00, a week on Monday, a month on its first
day): every statement passes the current period starts, and a row whose `period_start` is
older starts the new period with nothing spent (reservations in flight carry over: they are
released or settled in the period they end in). Nothing here reads a clock: `now` is passed in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, or_, select, update
from sqlalchemy.orm import Session

from jobstore.models import Budget, BudgetPeriod

_budgets = cast(Table, Budget.__table__)
ZERO = Decimal(0)


def period_starts(now: datetime) -> dict[str, datetime]:
    """The start of the current day, ISO week and month (UTC) at `now`."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "p_day": day,
        "p_week": day - timedelta(days=day.weekday()),
        "p_month": day.replace(day=1),
    }


def _current_start() -> Any:
    """SQL for a row's current period start: the period's boundary, or its own for lifetime."""
    period = _budgets.c.period
    return case(
        (period == BudgetPeriod.DAY.value, bindparam("p_day", type_=_budgets.c.period_start.type)),
        (period == BudgetPeriod.WEEK.value, bindparam("p_week", type_=_budgets.c.period_start.type)),
        (period == BudgetPeriod.MONTH.value, bindparam("p_month", type_=_budgets.c.period_start.type)),
        else_=_budgets.c.period_start,
    )


def _spent_now() -> Any:
    """SQL for what a row has spent in the current period (nothing yet when it just began)."""
    return case((_budgets.c.period_start < _current_start(), ZERO), else_=_budgets.c.spent_usd)


def _scope(owner_id: Any, batch_id: Any) -> Any:
    """The budgets a call of this key (and batch) counts against."""
    key_budget = and_(_budgets.c.owner_id == owner_id, _budgets.c.batch_id.is_(None))
    return or_(key_budget, _budgets.c.batch_id == batch_id) if batch_id is not None else key_budget


@dataclass(frozen=True)
class Remaining:
    """What may still be reserved under the tightest budget in scope."""

    usd: Decimal
    limit_usd: Decimal
    budget_id: str


@cache
def _remaining_statement(with_batch: bool) -> Any:
    scope = _scope(bindparam("p_owner"), bindparam("p_batch") if with_batch else None)
    return select(
        _budgets.c.id,
        _budgets.c.limit_usd,
        (_budgets.c.limit_usd - _spent_now() - _budgets.c.reserved_usd).label("left"),
    ).where(scope)


def remaining(session: Session, owner_id: str, batch_id: str | None, now: datetime) -> Remaining | None:
    """limit - spent - reserved under the tightest budget of the key (and batch); None when
    neither has a budget."""
    rows = session.execute(
        _remaining_statement(batch_id is not None),
        {"p_owner": owner_id, "p_batch": batch_id, **period_starts(now)},
    ).all()
    if not rows:
        return None
    budget_id, limit, left = min(rows, key=lambda r: r.left)
    return Remaining(max(ZERO, Decimal(left)), Decimal(limit), budget_id)


PRESENCE_S = 2.0  # how long a process trusts what it read of a key having a budget
_presence: dict[str, tuple[float, bool]] = {}


def key_has_budget(session: Session, owner_id: str) -> bool:
    """Whether the key has a budget, read at most every PRESENCE_S per process (most keys have
    none, and asking costs more than the rest of a submission); `set_budget` in this process
    forgets what it read at once, another process's within PRESENCE_S."""
    clock = time.monotonic()
    seen = _presence.get(owner_id)
    if seen is None or clock - seen[0] > PRESENCE_S:
        seen = (clock, has_budget(session, owner_id, None))
        _presence[owner_id] = seen
    return seen[1]


def has_budget(session: Session, owner_id: str, batch_id: str | None) -> bool:
    return session.scalar(select(_budgets.c.id).where(_scope(owner_id, batch_id)).limit(1)) is not None


def _roll() -> dict[str, Any]:
    """Column values that start a new period on a row whose period has ended."""
    rolled = _budgets.c.period_start < _current_start()
    return {
        "spent_usd": _spent_now(),
        "period_start": case((rolled, _current_start()), else_=_budgets.c.period_start),
    }


def _amount(name: str) -> Any:
    return bindparam(name, type_=_budgets.c.reserved_usd.type)


def _fits() -> Any:
    return _spent_now() + _budgets.c.reserved_usd + _amount("p_amount") <= _budgets.c.limit_usd


@cache
def _reserve_statement(with_batch: bool) -> Any:
    """Every budget in scope, each with whether this reservation was held on it. The UPDATE
    holds it only where it fits (Postgres re-checks that condition on the row's latest version
    when another reservation changed it meanwhile); whether a row fitted is read from which rows
    the UPDATE returned, not from the updated row (whose reserved_usd already includes it)."""
    scope = _scope(bindparam("p_owner"), bindparam("p_batch") if with_batch else None)
    held = (
        update(_budgets)
        .where(scope, _fits())
        .values(reserved_usd=_budgets.c.reserved_usd + _amount("p_amount"), **_roll())
        .returning(_budgets.c.id)
        .cte("held")
    )
    return (
        select(_budgets.c.id, held.c.id.is_not(None).label("fits"))
        .select_from(_budgets.outerjoin(held, held.c.id == _budgets.c.id))
        .where(scope)
    )


def _reserve_one_writer(session: Session, with_batch: bool, params: dict[str, Any]) -> list[Any]:
    """`_reserve_statement` for SQLite (the embedded store), which takes no UPDATE in a CTE:
    the UPDATE, then the budgets in scope. SQLite has one writer at a time, so nothing can
    change a budget between the two."""
    scope = _scope(bindparam("p_owner"), bindparam("p_batch") if with_batch else None)
    held = set(
        session.scalars(
            update(_budgets)
            .where(scope, _fits())
            .values(reserved_usd=_budgets.c.reserved_usd + _amount("p_amount"), **_roll())
            .returning(_budgets.c.id),
            params,
        )
    )
    ids = session.scalars(select(_budgets.c.id).where(scope), params).all()
    return [SimpleNamespace(id=budget_id, fits=budget_id in held) for budget_id in ids]


def reserve(session: Session, owner_id: str, batch_id: str | None, amount: Decimal, now: datetime) -> bool:
    """Hold `amount` against every budget in scope, or against none: False (nothing held)
    when any would pass its limit; True when held, or when no budget applies. One statement
    (and, only when one budget fits and the other does not, a second that undoes the first)."""
    params = {"p_owner": owner_id, "p_batch": batch_id, "p_amount": amount, **period_starts(now)}
    if session.get_bind().dialect.name == "sqlite":
        rows = _reserve_one_writer(session, batch_id is not None, params)
    else:
        rows = list(session.execute(_reserve_statement(batch_id is not None), params).all())
    if all(row.fits for row in rows):
        return True
    held = [row.id for row in rows if row.fits]
    if held:
        session.execute(
            update(_budgets)
            .where(_budgets.c.id.in_(held))
            .values(reserved_usd=_budgets.c.reserved_usd - _amount("p_amount")),
            {"p_amount": amount},
        )
    return False


def _less(reserved: Any) -> Any:
    """reserved_usd less a reservation, never below zero."""
    return case((_budgets.c.reserved_usd > reserved, _budgets.c.reserved_usd - reserved), else_=ZERO)


@dataclass(frozen=True)
class SoftAlert:
    """A budget whose soft limit a settlement crossed (the first time this period)."""

    budget_id: str
    owner_id: str
    batch_id: str | None
    spent_usd: Decimal
    soft_limit_usd: Decimal
    limit_usd: Decimal


def settle(
    session: Session,
    owner_id: str,
    batch_id: str | None,
    *,
    reserved: Decimal,
    cost: Decimal,
    now: datetime,
) -> list[SoftAlert]:
    """A call's real cost replaces its reservation. Returns the budgets whose soft limit this
    settlement crossed for the first time in their period (each alerted once)."""
    rows = session.execute(
        update(_budgets)
        .where(_scope(owner_id, batch_id))
        .values(
            reserved_usd=_less(_amount("p_reserved")),
            spent_usd=_spent_now() + _amount("p_cost"),
            period_start=_roll()["period_start"],
        )
        .returning(
            _budgets.c.id,
            _budgets.c.owner_id,
            _budgets.c.batch_id,
            _budgets.c.spent_usd,
            _budgets.c.soft_limit_usd,
            _budgets.c.limit_usd,
            _budgets.c.soft_alerted_for,
            _budgets.c.period_start,
        ),
        {"p_reserved": reserved, "p_cost": cost, **period_starts(now)},
    ).all()
    alerts = []
    for row in rows:
        crossed = row.soft_limit_usd is not None and row.spent_usd >= row.soft_limit_usd
        if crossed and row.soft_alerted_for != row.period_start:
            claimed = session.execute(
                update(_budgets)
                .where(_budgets.c.id == row.id, _not_alerted_for(row.period_start))
                .values(soft_alerted_for=row.period_start)
                .returning(_budgets.c.id)
            ).first()
            if claimed is not None:
                alerts.append(
                    SoftAlert(
                        row.id, row.owner_id, row.batch_id, row.spent_usd, row.soft_limit_usd, row.limit_usd
                    )
                )
    return alerts


def _not_alerted_for(period_start: datetime) -> Any:
    return or_(_budgets.c.soft_alerted_for.is_(None), _budgets.c.soft_alerted_for != period_start)


def release(session: Session, owner_id: str, batch_id: str | None, reserved: Decimal) -> None:
    """A reservation whose call will not be made (a failure before the call, a cancel)."""
    if reserved <= 0:
        return
    session.execute(
        update(_budgets).where(_scope(owner_id, batch_id)).values(reserved_usd=_less(_amount("p_reserved"))),
        {"p_reserved": reserved},
    )


def set_budget(
    session: Session,
    owner_id: str,
    *,
    limit_usd: Decimal | None,
    period: BudgetPeriod = BudgetPeriod.LIFETIME,
    soft_limit_usd: Decimal | None = None,
    batch_id: str | None = None,
    now: datetime,
) -> Budget | None:
    """Create, change or (with `limit_usd` None) remove the budget of a key or of a batch. A
    changed period starts now; what was spent in the current period is kept otherwise."""
    _presence.pop(owner_id, None)
    existing = session.scalar(
        select(Budget).where(
            Budget.owner_id == owner_id,
            Budget.batch_id.is_(None) if batch_id is None else Budget.batch_id == batch_id,
        )
    )
    if limit_usd is None:
        if existing is not None:
            session.delete(existing)
        return None
    start = period_starts(now)
    period_start = {"day": start["p_day"], "week": start["p_week"], "month": start["p_month"]}.get(
        period.value, now
    )
    if existing is None:
        existing = Budget(
            owner_id=owner_id,
            batch_id=batch_id,
            limit_usd=limit_usd,
            period=period.value,
            soft_limit_usd=soft_limit_usd,
            period_start=period_start,
            spent_usd=ZERO,
            reserved_usd=ZERO,
        )
        session.add(existing)
    else:
        if existing.period != period.value:
            existing.period, existing.period_start, existing.spent_usd = period.value, period_start, ZERO
        existing.limit_usd = limit_usd
        existing.soft_limit_usd = soft_limit_usd
    session.flush()
    return existing


def budgets_of(session: Session, owner_ids: Sequence[str] | None = None) -> list[Budget]:
    """Key budgets (not batches'), of these keys or of all."""
    query = select(Budget).where(Budget.batch_id.is_(None)).order_by(Budget.owner_id)
    if owner_ids is not None:
        query = query.where(Budget.owner_id.in_(list(owner_ids)))
    return list(session.scalars(query))
