"""API keys: create, find, list, revoke and change them, and what each has spent.

A key's secret is returned once, at creation; only its sha256 is stored, with a short prefix
to recognise it in listings. A revoked key stays (its jobs and spend keep their owner) but
no longer authenticates. A key is an admin or a member (`KeyRole`); the last active admin
cannot be revoked or demoted, so the API always has someone who can manage keys (the CLI,
which talks to the database, can make a new admin in any case).

Budgets live in `budgets` (`jobstore/ledger.py`); a key's view here joins its budget row.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import aware
from jobstore import batch_models, ledger
from jobstore.models import ApiKey, Attempt, Budget, BudgetPeriod, Job, KeyRole

KEY_PREFIX = "lq_"
# budgets.batch_id refers to batches: its table must be in the metadata to flush a budget row
# (a process that imported only jobstore.models could not).
_BATCHES_TABLE = batch_models.Batch.__table__


class LastAdmin(Exception):
    """The change would leave no active admin key."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"{key_id} is the last active admin key; create another admin first "
            "('llmqueue keys create --admin', or POST /v1/keys with role admin)"
        )
        self.key_id = key_id


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class BudgetSpec:
    """A key's budget as asked for: a limit in USD per period, and an optional soft limit."""

    limit_usd: Decimal
    period: BudgetPeriod = BudgetPeriod.LIFETIME
    soft_limit_usd: Decimal | None = None


def create_api_key(
    session: Session,
    name: str,
    budget_usd: Decimal | None = None,
    *,
    role: KeyRole = KeyRole.MEMBER,
    budget: BudgetSpec | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    alert_webhook_url: str | None = None,
    now: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key; the secret is returned once and only its hash is stored. `budget_usd` is a
    lifetime budget (shorthand); `budget` any other."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name,
        key_hash=hash_secret(secret),
        key_prefix=secret[:10],
        role=role.value,
        rpm=rpm,
        tpm=tpm,
        alert_webhook_url=alert_webhook_url,
    )
    if now is not None:
        key.created_at = now
    session.add(key)
    session.flush()
    if budget is None and budget_usd is not None:
        budget = BudgetSpec(budget_usd)
    if budget is not None:
        set_key_budget(session, key.id, budget, now=now or key.created_at)
    return key, secret


def find_api_key(session: Session, secret: str) -> ApiKey | None:
    """The active key with this secret (None when unknown or revoked)."""
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_secret(secret)))
    if key is None or key.revoked_at is not None:
        return None
    return key


def get_key(session: Session, key_id: str) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def named(session: Session, key_ids: Sequence[str]) -> list[ApiKey]:
    """These keys, for their names."""
    return list(session.scalars(select(ApiKey).where(ApiKey.id.in_(list(key_ids)))))


def _other_active_admins(session: Session, key_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.role == KeyRole.ADMIN.value, ApiKey.revoked_at.is_(None), ApiKey.id != key_id)
        )
        or 0
    )


def revoke_key(session: Session, key: ApiKey, now: datetime) -> ApiKey:
    """Revoke the key (a key already revoked keeps its first revocation time). Raises LastAdmin
    for the last active admin. Every API process refuses it within seconds (`api/deps.py`)."""
    if key.revoked_at is not None:
        return key
    if key.role == KeyRole.ADMIN.value and _other_active_admins(session, key.id) == 0:
        raise LastAdmin(key.id)
    key.revoked_at = now
    session.flush()
    return key


def set_role(session: Session, key: ApiKey, role: KeyRole) -> None:
    """Make the key an admin or a member; raises LastAdmin when it would demote the last admin."""
    if (
        key.role == KeyRole.ADMIN.value
        and role != KeyRole.ADMIN
        and key.revoked_at is None
        and _other_active_admins(session, key.id) == 0
    ):
        raise LastAdmin(key.id)
    key.role = role.value


def set_key_budget(
    session: Session, key_id: str, budget: BudgetSpec | None, *, now: datetime
) -> Budget | None:
    """Set, change or (None) remove the key's budget. Spend in the current period is kept unless
    the period changes (`ledger.set_budget`)."""
    if budget is None:
        return ledger.set_budget(session, key_id, limit_usd=None, now=now)
    return ledger.set_budget(
        session,
        key_id,
        limit_usd=budget.limit_usd,
        period=budget.period,
        soft_limit_usd=budget.soft_limit_usd,
        now=now,
    )


def total_spend(session: Session, key_ids: Sequence[str] | None = None) -> dict[str, Decimal]:
    """Every key's spend over its whole life: the sum of its jobs' attempts' costs."""
    query = (
        select(Job.owner_id, func.coalesce(func.sum(Attempt.cost_usd), 0))
        .join(Attempt, Attempt.job_id == Job.id)
        .group_by(Job.owner_id)
    )
    if key_ids is not None:
        query = query.where(Job.owner_id.in_(list(key_ids)))
    return {owner: Decimal(total) for owner, total in session.execute(query)}


@dataclass(frozen=True)
class BudgetState:
    """A key's budget as it stands now: what the current period spent, holds and has left."""

    budget: Budget
    spent_usd: Decimal
    remaining_usd: Decimal
    period_start: datetime
    resets_at: datetime | None  # None: a lifetime budget never resets


def budget_state(budget: Budget, now: datetime) -> BudgetState:
    """The budget row read at `now`: a period that has ended counts as nothing spent yet (the
    row itself rolls over at its next reservation or settlement)."""
    starts = ledger.period_starts(now)
    period = BudgetPeriod(budget.period)
    boundary = {
        BudgetPeriod.DAY: starts["p_day"],
        BudgetPeriod.WEEK: starts["p_week"],
        BudgetPeriod.MONTH: starts["p_month"],
    }.get(period)
    stored_start = aware(budget.period_start)
    rolled = boundary is not None and stored_start < boundary
    spent = Decimal(0) if rolled else Decimal(budget.spent_usd)
    start = boundary if rolled and boundary is not None else stored_start
    left = Decimal(budget.limit_usd) - spent - Decimal(budget.reserved_usd)
    return BudgetState(budget, spent, max(Decimal(0), left), start, _next_reset(period, starts))


def _next_reset(period: BudgetPeriod, starts: dict[str, datetime]) -> datetime | None:
    if period == BudgetPeriod.DAY:
        return starts["p_day"] + timedelta(days=1)
    if period == BudgetPeriod.WEEK:
        return starts["p_week"] + timedelta(days=7)
    if period == BudgetPeriod.MONTH:
        month = starts["p_month"]
        return (
            month.replace(year=month.year + 1, month=1)
            if month.month == 12
            else month.replace(month=month.month + 1)
        )
    return None


@dataclass(frozen=True)
class KeyView:
    """A key with its budget as it stands and everything it has spent: what listings show."""

    key: ApiKey
    budget: BudgetState | None
    spent_usd: Decimal


def key_views(
    session: Session, key_ids: Sequence[str] | None = None, *, include_revoked: bool = True, now: datetime
) -> list[KeyView]:
    """These keys (all when None), oldest first, in three queries whatever their number."""
    query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
    if key_ids is not None:
        query = query.where(ApiKey.id.in_(list(key_ids)))
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    rows = list(session.scalars(query))
    ids = [k.id for k in rows]
    budgets = {b.owner_id: b for b in ledger.budgets_of(session, ids)}
    spent = total_spend(session, ids)
    return [
        KeyView(
            k,
            budget_state(budgets[k.id], now) if k.id in budgets else None,
            spent.get(k.id, Decimal(0)),
        )
        for k in rows
    ]
