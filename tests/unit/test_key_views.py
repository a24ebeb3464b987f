"""Reading a budget row at a given time (period rollover, next reset) and a job's tags: the
pure parts of key listings and spend views."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from jobstore.keys import budget_state
from jobstore.models import Budget, BudgetPeriod
from jobstore.spend import parse_tags


def budget(period: BudgetPeriod, start: datetime, spent: str = "5", reserved: str = "1") -> Budget:
    return Budget(
        owner_id="key_x",
        limit_usd=Decimal("10"),
        period=period.value,
        period_start=start,
        spent_usd=Decimal(spent),
        reserved_usd=Decimal(reserved),
    )


def test_a_day_budget_read_the_next_day_has_spent_nothing_yet() -> None:
    row = budget(BudgetPeriod.DAY, datetime(2026, 12, 1, tzinfo=UTC))
    same_day = budget_state(row, datetime(2026, 12, 1, 23, 59, tzinfo=UTC))
    assert (same_day.spent_usd, same_day.remaining_usd) == (Decimal(5), Decimal(4))
    assert same_day.resets_at == datetime(2026, 12, 2, tzinfo=UTC)
    next_day = budget_state(row, datetime(2026, 12, 2, 0, 0, 1, tzinfo=UTC))
    assert (next_day.spent_usd, next_day.remaining_usd) == (Decimal(0), Decimal(9))  # the reservation stays
    assert next_day.period_start == datetime(2026, 12, 2, tzinfo=UTC)


def test_weeks_start_on_monday_and_december_resets_into_january() -> None:
    wednesday = datetime(2026, 12, 2, 12, tzinfo=UTC)
    week = budget_state(budget(BudgetPeriod.WEEK, datetime(2026, 11, 30, tzinfo=UTC)), wednesday)
    assert week.spent_usd == 5 and week.resets_at == datetime(2026, 12, 7, tzinfo=UTC)
    month = budget_state(budget(BudgetPeriod.MONTH, datetime(2026, 12, 1, tzinfo=UTC)), wednesday)
    assert month.spent_usd == 5 and month.resets_at == datetime(2027, 1, 1, tzinfo=UTC)


def test_a_lifetime_budget_never_resets() -> None:
    state = budget_state(budget(BudgetPeriod.LIFETIME, datetime(2020, 1, 1, tzinfo=UTC)), datetime.now(UTC))
    assert state.spent_usd == 5 and state.resets_at is None


def test_an_overdrawn_budget_has_nothing_left_not_less() -> None:
    state = budget_state(
        budget(BudgetPeriod.LIFETIME, datetime(2026, 1, 1, tzinfo=UTC), spent="10", reserved="2"),
        datetime.now(UTC),
    )
    assert state.remaining_usd == 0


def test_tags_are_a_list_or_a_comma_separated_string() -> None:
    assert parse_tags('["etl", "nightly"]') == ["etl", "nightly"]
    assert parse_tags("etl, nightly,") == ["etl", "nightly"]
    assert parse_tags(None) == [] and parse_tags('[1, {}, "x"]') == ["1", "x"]
    assert parse_tags("[not json") == ["[not json"]
