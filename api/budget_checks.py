"""Budgets at intake: a key whose budget is spent is refused before anything is stored, and a
batch's own `max_cost_usd` becomes its budget row.

Single jobs and chat completions are checked by routing (`api/validation.py`: no model fits
the remaining budget, `budget_exceeded`); a batch is refused here when nothing at all is
left, since how much of it the budget covers is only known line by line at dispatch, where
each call reserves its maximum cost (`jobstore/ledger.py`) and lines past the budget fail
with `budget_exceeded`. A file upload spends nothing and is never refused for budget.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from api.errors import ApiError
from core.clock import utcnow
from jobstore import ledger
from jobstore.models import ApiKey, Budget


def require_budget_left(session: Session, owner: ApiKey) -> None:
    """A 422 `budget_exceeded` when the key's budget has nothing left in this period."""
    left = ledger.remaining(session, owner.id, None, utcnow())
    if left is None or left.usd > 0:
        return
    budget = session.get(Budget, left.budget_id)
    period = f" this {budget.period}" if budget is not None and budget.period != "lifetime" else ""
    raise ApiError(
        422,
        f"this key's budget of ${left.limit_usd:f}{period} is spent (or held by calls in flight); "
        "an admin can raise it with 'llmqueue keys set-budget' or PUT /v1/keys/{id}/budget",
        param="Authorization",
        code="budget_exceeded",
    )


def set_batch_budget(session: Session, owner: ApiKey, batch_id: str, max_cost_usd: Decimal | None) -> None:
    """The batch's `max_cost_usd` as its budget: its calls together never spend more."""
    if max_cost_usd is not None:
        ledger.set_budget(session, owner.id, limit_usd=max_cost_usd, batch_id=batch_id, now=utcnow())
