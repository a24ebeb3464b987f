"""Economy mode's pure decisions: which batches may use provider batches, what becomes of a
line that came back unanswered, how polls back off, and a line's most at batch prices."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.errors import BatchLineError, ErrorKind
from jobstore.batch_models import Batch, BatchKind
from jobstore.batches import ECONOMY_HELD_UNTIL, HELD_UNTIL, economy_eligible, job_row
from routing.catalog import get_catalog
from routing.costs import NoBatchPrices, max_batch_cost, max_cost
from workers.provider_batch_lines import Fate, Unanswered, fate, unanswered_of, unreported
from workers.provider_batch_runs import next_interval
from workers.providers.batch_base import (
    BatchLineResult,
    NotRunReason,
    ProviderBatchState,
    ProviderBatchStatus,
)
from workers.providers.errors import ContentFiltered, InvalidRequest, ProviderError, RateLimited, Transient

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def batch(kind: BatchKind, **options: Any) -> Batch:
    return Batch(id="batch_x", owner_id="key_x", kind=kind, options=options)


@pytest.mark.parametrize(
    ("kind", "options", "eligible"),
    [
        (BatchKind.OPENAI, {}, True),  # its 24h completion window is a deadline
        (BatchKind.OPENAI, {"delivery": "online"}, False),
        (BatchKind.NATIVE, {}, False),  # no deadline given: answers are wanted as soon as may be
        (BatchKind.NATIVE, {"deadline_s": 86400 * 2}, True),
        (BatchKind.NATIVE, {"deadline_s": 86400 * 2, "delivery": "online"}, False),
        (BatchKind.NATIVE, {"delivery": "economy"}, True),
    ],
)
def test_which_batches_may_use_provider_batches(
    kind: BatchKind, options: dict[str, Any], eligible: bool
) -> None:
    b = batch(kind, **options)
    assert economy_eligible(b) is eligible
    row = job_row(b, request={"messages": []}, custom_id="a", line_number=1, model=None, strategy="cost")
    assert row["not_before"] == (ECONOMY_HELD_UNTIL if eligible else HELD_UNTIL)


def failed_line(error: ProviderError) -> Unanswered:
    return unanswered_of(BatchLineResult.failed("att_1", error))


def test_an_unanswered_line_goes_online_while_the_deadline_allows() -> None:
    why = failed_line(Transient("server error"))
    assert why.error_type == ErrorKind.TRANSIENT.value and "server error" in why.message
    later = NOW + timedelta(hours=1)
    assert fate(why, job_open=True, cancelling=False, now=NOW, deadline=later) is Fate.ONLINE
    assert fate(why, job_open=True, cancelling=False, now=NOW, deadline=None) is Fate.ONLINE
    assert fate(why, job_open=True, cancelling=False, now=later, deadline=later) is Fate.FAILED


def test_a_line_the_provider_refused_for_its_request_fails_without_an_online_call() -> None:
    for error in (InvalidRequest("bad schema"), ContentFiltered("policy")):
        assert (
            fate(failed_line(error), job_open=True, cancelling=False, now=NOW, deadline=None) is Fate.FAILED
        )
    limited = failed_line(RateLimited("slow down"))
    assert fate(limited, job_open=True, cancelling=False, now=NOW, deadline=None) is Fate.ONLINE


def test_a_cancelled_batch_or_job_cancels_its_unanswered_lines() -> None:
    why = unanswered_of(BatchLineResult.unrun("att_1", NotRunReason.CANCELLED))
    assert why.error_type == BatchLineError.CANCELLED.value
    assert fate(why, job_open=True, cancelling=True, now=NOW, deadline=None) is Fate.CANCELLED
    assert fate(why, job_open=False, cancelling=False, now=NOW, deadline=None) is Fate.CANCELLED


def test_lines_an_ended_batch_never_reported_say_why() -> None:
    refused = ProviderBatchStatus(ProviderBatchState.FAILED, "failed", error=InvalidRequest("empty file"))
    assert unreported(refused).error_type == BatchLineError.BATCH_FAILED.value
    assert "empty file" in unreported(refused).message
    assert unreported(refused).kind is None  # the batch's fault, not the line's: it goes online
    expired = ProviderBatchStatus(ProviderBatchState.EXPIRED, "expired")
    assert unreported(expired).error_type == BatchLineError.EXPIRED.value
    completed = ProviderBatchStatus(ProviderBatchState.COMPLETED, "completed")
    assert unreported(completed).error_type == BatchLineError.NOT_REPORTED.value


def test_polls_back_off_by_half_up_to_the_max() -> None:
    waits = [0.0]
    for _ in range(8):
        waits.append(next_interval(waits[-1], 30.0, 300.0))
    assert waits[1:4] == [30.0, 45.0, 67.5]
    assert waits[-1] == 300.0 and all(b >= a for a, b in itertools.pairwise(waits))


def test_a_line_reserves_its_most_at_batch_prices() -> None:
    model = get_catalog().models["gpt-4o-mini"]
    assert max_batch_cost(model, 1_000_000, 1_000_000) == Decimal("0.375")  # 0.075 + 0.30
    assert max_batch_cost(model, 1000, 500) * 2 == max_cost(model, 1000, 500)  # half the list price
    cohere = next(
        m for m in get_catalog().models.values() if m.provider == "cohere" and m.kind != "embedding"
    )
    with pytest.raises(NoBatchPrices):
        max_batch_cost(cohere, 10, 10)
