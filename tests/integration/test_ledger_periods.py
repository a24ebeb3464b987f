"""The ledger on real Postgres with an injected clock: periods that reset at UTC boundaries,
a soft limit that alerts once a period (however many settlements race past it), a batch's
limit next to its key's, and a reservation as large as the room left.

`jobstore/ledger.py` reads no clock: every call here passes its `now`, as the dispatcher and
the writer do (`route_queued_job(..., now=...)` at the end routes real jobs at a chosen time).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from core.types import ChatRequest
from jobstore import ledger
from jobstore.batch_models import Batch, BatchKind
from jobstore.db import transaction
from jobstore.jobs import create_job, find_api_key
from jobstore.models import Attempt, Budget, BudgetPeriod, Job
from routing.catalog import get_catalog
from routing.tokens import raw_request_tokens
from tests.integration.conftest import make_key
from workers.dispatch import route_queued_job
from workers.next_step import SendAttempt

D = Decimal


def new_key(database: str) -> str:
    with transaction() as session:
        owner = find_api_key(session, make_key("ledger"))
        assert owner is not None
        return owner.id


def budget_of(owner: str, batch_id: str | None = None) -> Budget:
    with transaction() as session:
        query = select(Budget).where(Budget.owner_id == owner)
        query = query.where(Budget.batch_id.is_(None) if batch_id is None else Budget.batch_id == batch_id)
        found = session.scalars(query).one()
        session.expunge(found)
        return found


def set_budget(owner: str, limit: str, period: BudgetPeriod, now: datetime, **extra: str) -> None:
    with transaction() as session:
        ledger.set_budget(
            session,
            owner,
            limit_usd=D(limit),
            period=period,
            now=now,
            **{k: D(v) for k, v in extra.items()},  # type: ignore[arg-type]
        )


def reserve(owner: str, amount: str, now: datetime, batch_id: str | None = None) -> bool:
    with transaction() as session:
        return ledger.reserve(session, owner, batch_id, D(amount), now)


def spend(owner: str, amount: str, now: datetime, batch_id: str | None = None) -> list[ledger.SoftAlert]:
    """A call of exactly `amount`: reserved, then settled at that cost."""
    assert reserve(owner, amount, now, batch_id)
    with transaction() as session:
        return ledger.settle(session, owner, batch_id, reserved=D(amount), cost=D(amount), now=now)


def left(owner: str, now: datetime, batch_id: str | None = None) -> Decimal:
    with transaction() as session:
        found = ledger.remaining(session, owner, batch_id, now)
        assert found is not None
        return found.usd


@pytest.mark.parametrize(
    ("period", "start", "last_moment", "next_period"),
    [
        # A day at 00:00 UTC.
        (
            BudgetPeriod.DAY,
            datetime(2026, 12, 1, 9, tzinfo=UTC),
            datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC),
            None,
        ),
        # A week on Monday 00:00 UTC: 2026-12-06 is a Sunday, 2026-12-07 a Monday.
        (
            BudgetPeriod.WEEK,
            datetime(2026, 12, 2, tzinfo=UTC),
            datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC),
            datetime(2026, 12, 7, tzinfo=UTC),
        ),
        # A month on its first day, across a year.
        (
            BudgetPeriod.MONTH,
            datetime(2026, 12, 15, tzinfo=UTC),
            datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_a_period_budget_resets_at_its_utc_boundary(
    database: str,
    period: BudgetPeriod,
    start: datetime,
    last_moment: datetime,
    next_period: datetime | None,
) -> None:
    next_period = next_period or datetime(2026, 12, 2, tzinfo=UTC)
    owner = new_key(database)
    set_budget(owner, "1", period, start)
    spend(owner, "0.7", start)
    spend(owner, "0.3", last_moment - timedelta(hours=1))
    assert left(owner, last_moment) == 0
    assert not reserve(owner, "0.00000001", last_moment)  # spent, to the last second of the period
    assert budget_of(owner).reserved_usd == 0

    assert left(owner, next_period) == 1  # a new period: nothing spent yet
    spend(owner, "0.25", next_period)
    row = budget_of(owner)
    assert (row.spent_usd, row.reserved_usd, row.period_start) == (D("0.25"), D(0), next_period)
    assert left(owner, next_period + timedelta(minutes=1)) == D("0.75")


def test_a_lifetime_budget_never_resets(database: str) -> None:
    owner = new_key(database)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    set_budget(owner, "1", BudgetPeriod.LIFETIME, start)
    spend(owner, "1", start)
    assert not reserve(owner, "0.00000001", datetime(2030, 1, 1, tzinfo=UTC))


def test_a_call_in_flight_at_midnight_settles_in_the_period_it_ends_in(database: str) -> None:
    owner = new_key(database)
    evening, morning = datetime(2026, 12, 1, 23, 59, tzinfo=UTC), datetime(2026, 12, 2, 0, 1, tzinfo=UTC)
    set_budget(owner, "1", BudgetPeriod.DAY, evening)
    spend(owner, "0.5", evening)
    assert reserve(owner, "0.4", evening)  # in flight across midnight
    assert left(owner, morning) == D("0.6")  # the new day: nothing spent, the 0.4 still held
    assert not reserve(owner, "0.61", morning)
    with transaction() as session:
        ledger.settle(session, owner, None, reserved=D("0.4"), cost=D("0.3"), now=morning)
    row = budget_of(owner)
    assert (row.spent_usd, row.reserved_usd) == (D("0.3"), D(0))


def test_a_soft_limit_alerts_once_a_period(database: str) -> None:
    owner = new_key(database)
    day1, day2 = datetime(2026, 12, 1, 8, tzinfo=UTC), datetime(2026, 12, 2, 8, tzinfo=UTC)
    set_budget(owner, "1", BudgetPeriod.DAY, day1, soft_limit_usd="0.5")
    assert spend(owner, "0.4", day1) == []
    [alert] = spend(owner, "0.2", day1)  # 0.6 crosses 0.5
    assert (alert.owner_id, alert.batch_id, alert.spent_usd) == (owner, None, D("0.6"))
    assert (alert.soft_limit_usd, alert.limit_usd) == (D("0.5"), D("1"))
    assert spend(owner, "0.1", day1) == [] and spend(owner, "0.1", day1 + timedelta(hours=3)) == []
    assert spend(owner, "0.3", day2) == []  # the next day starts under the soft limit again
    [again] = spend(owner, "0.3", day2 + timedelta(hours=1))
    assert again.spent_usd == D("0.6") and again.budget_id == alert.budget_id


def test_settlements_racing_past_the_soft_limit_alert_once(database: str) -> None:
    owner = new_key(database)
    now = datetime(2026, 12, 1, 8, tzinfo=UTC)
    set_budget(owner, "10", BudgetPeriod.MONTH, now, soft_limit_usd="1")
    for _ in range(40):
        assert reserve(owner, "0.05", now)
    alerts: list[ledger.SoftAlert] = []
    start = threading.Barrier(40)

    def settle() -> None:
        start.wait()
        with transaction() as session:
            alerts.extend(ledger.settle(session, owner, None, reserved=D("0.05"), cost=D("0.05"), now=now))

    threads = [threading.Thread(target=settle) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(alerts) == 1 and alerts[0].spent_usd >= 1
    row = budget_of(owner)
    assert (row.spent_usd, row.reserved_usd) == (D("2"), D(0))


def test_a_batch_limit_and_its_key_budget_hold_together_or_not_at_all(database: str) -> None:
    owner = new_key(database)
    now = datetime(2026, 12, 1, 8, tzinfo=UTC)
    set_budget(owner, "1", BudgetPeriod.MONTH, now)
    with transaction() as session:
        batch = Batch(owner_id=owner, kind=BatchKind.OPENAI.value)
        session.add(batch)
        session.flush()
        batch_a = batch.id
        ledger.set_budget(session, owner, limit_usd=D("0.3"), batch_id=batch_a, now=now)
    spend(owner, "0.25", now, batch_id=batch_a)
    assert not reserve(owner, "0.1", now, batch_id=batch_a)  # the batch's limit refuses
    assert budget_of(owner).reserved_usd == 0  # and the key's hold is undone
    assert reserve(owner, "0.1", now)  # outside the batch, the key has room
    spend(owner, "0.61", now)  # the key: 0.86 spent, 0.1 held, 0.04 left; the batch: 0.05 left
    assert not reserve(owner, "0.05", now, batch_id=batch_a)  # the key's budget refuses
    assert budget_of(owner, batch_a).reserved_usd == 0  # and the batch's hold is undone
    assert (budget_of(owner).spent_usd, budget_of(owner, batch_a).spent_usd) == (D("0.86"), D("0.25"))


def test_a_reservation_as_large_as_the_room_is_held(database: str) -> None:
    owner = new_key(database)
    now = datetime(2026, 12, 1, 8, tzinfo=UTC)
    set_budget(owner, "1", BudgetPeriod.LIFETIME, now)
    assert reserve(owner, "0.6", now)  # more than half the room: held, and said so
    assert budget_of(owner).reserved_usd == D("0.6")
    assert not reserve(owner, "0.6", now)  # refused, and nothing more held
    assert budget_of(owner).reserved_usd == D("0.6")
    assert reserve(owner, "0.4", now) and not reserve(owner, "0.00000001", now)
    assert budget_of(owner).reserved_usd == 1


def test_the_dispatcher_routes_again_when_the_day_turns(database: str) -> None:
    """Real jobs routed by the dispatcher's own function at an injected time: refused with
    `budget_exceeded` at 23:59, routed with its reservation at 00:00."""
    owner = new_key(database)
    evening, midnight = datetime(2026, 12, 1, 23, 59, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    set_budget(owner, "0.01", BudgetPeriod.DAY, evening)
    spend(owner, "0.00999", evening)
    request = ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": "a short question"}], "max_tokens": 100}
    )
    steps = {}
    for name, now in (("evening", evening), ("midnight", midnight)):
        with transaction() as session:
            job, _ = create_job(
                session,
                owner_id=owner,
                request=request,
                strategy="manual",
                model="gpt-4.1",
                request_tokens=raw_request_tokens(request),
            )
            session.flush()
            loaded = session.get(Job, job.id)
            assert loaded is not None
            steps[name] = (job.id, route_queued_job(session, loaded, catalog=get_catalog(), now=now))
    with transaction() as session:
        refused = session.get(Job, steps["evening"][0])
        assert refused is not None and (refused.status, refused.error_type) == ("failed", "budget_exceeded")
        routed = session.get(Job, steps["midnight"][0])
        assert routed is not None and routed.status == "dispatched"
        assert isinstance(steps["midnight"][1], SendAttempt)
        attempt = session.scalars(select(Attempt).where(Attempt.job_id == routed.id)).one()
        assert attempt.reserved_usd > 0
    row = budget_of(owner)
    assert (row.spent_usd, row.reserved_usd, row.period_start) == (D(0), attempt.reserved_usd, midnight)
