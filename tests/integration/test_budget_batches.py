"""A batch far bigger than its budget, through the official `openai` SDK on the real stack:
no more than the budget is spent, and every line past it is answered in the error file with
`budget_exceeded` (never called). Once with the key's budget, once with the batch's own
`max_cost_usd`. `bench/budget.py batch` does the same with 50,000 lines and ~1,000 paid."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from core.clock import utcnow
from jobstore import ledger
from jobstore.db import transaction
from jobstore.jobs import find_api_key
from jobstore.models import Attempt, Budget, Job
from routing.catalog import get_catalog
from routing.costs import max_cost
from tests.integration.conftest import Stack
from tests.integration.test_openai_compat import jsonl, wait_batch

MODEL = "gpt-4.1"  # $2 in, $8 out per million
LINES = 100
PAID = 10  # about how many lines the budget covers
MAX_TOKENS = 24


def line(i: int) -> str:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Line {i:05d}: give the capital of France."}],
        "max_tokens": MAX_TOKENS,
    }
    return json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})


def line_ceiling() -> Decimal:
    """What one line reserves at most (its input is under 40 tokens)."""
    return max_cost(get_catalog().models[MODEL], 40, MAX_TOKENS)


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0)


def owner_id(stack: Stack) -> str:
    with transaction() as session:
        owner = find_api_key(session, stack.key)
        assert owner is not None
        return owner.id


def spent_by(owner: str, batch_id: str) -> tuple[Decimal, int]:
    with transaction() as session:
        cost, calls = session.execute(
            select(func.coalesce(func.sum(Attempt.cost_usd), 0), func.count(Attempt.id))
            .join(Job)
            .where(Job.owner_id == owner, Job.batch_id == batch_id)
        ).one()
    return Decimal(cost), int(calls)


def run_batch(client: openai.OpenAI, **extra: Any) -> Any:
    data = ("\n".join(line(i) for i in range(LINES)) + "\n").encode()
    file_id = client.files.create(file=("lines.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", **extra
    )
    return wait_batch(client, batch.id, timeout=90)


def check_answers(client: openai.OpenAI, done: Any) -> tuple[int, int]:
    """Every line answered once: successes in the output file, the rest budget_exceeded."""
    counts = done.request_counts
    outputs, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert counts.total == LINES and counts.completed + counts.failed == LINES, counts
    assert (len(outputs), len(errors)) == (counts.completed, counts.failed)
    assert {e["custom_id"] for e in outputs + errors} == {f"l{i}" for i in range(LINES)}
    assert {e["error"]["code"] for e in errors} == {"budget_exceeded"}, errors[:3]
    return counts.completed, counts.failed


def test_a_batch_past_the_key_budget_spends_no_more_than_it(stack: Stack, client: openai.OpenAI) -> None:
    owner = owner_id(stack)
    limit = (line_ceiling() * PAID).quantize(Decimal("0.00000001"))
    with transaction() as session:
        ledger.set_budget(session, owner, limit_usd=limit, now=utcnow())
    done = run_batch(client)
    completed, failed = check_answers(client, done)
    spent, calls = spent_by(owner, done.id)
    with transaction() as session:
        budget = session.scalars(select(Budget).where(Budget.owner_id == owner)).one()
    assert Decimal(budget.spent_usd) == spent <= limit and budget.reserved_usd == 0
    assert PAID <= completed < 3 * PAID and calls == completed  # none for a refused line
    assert len(stack.emulator.calls(model=MODEL)) == completed
    print(
        f"\n{LINES} lines, key budget ${limit}: {completed} answered, "
        f"{failed} budget_exceeded, spent ${spent}"
    )


def test_a_batch_max_cost_usd_stops_the_batch_not_the_key(stack: Stack, client: openai.OpenAI) -> None:
    owner = owner_id(stack)
    limit = (line_ceiling() * PAID).quantize(Decimal("0.00000001"))
    done = run_batch(client, extra_body={"max_cost_usd": str(limit)})
    completed, failed = check_answers(client, done)
    spent, calls = spent_by(owner, done.id)
    with transaction() as session:
        budget = session.scalars(select(Budget).where(Budget.batch_id == done.id)).one()
    assert Decimal(budget.spent_usd) == spent <= limit and budget.reserved_usd == 0
    assert PAID <= completed < 3 * PAID and calls == completed
    # The key has no budget of its own: a job outside the batch still runs.
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "and one more"}], max_tokens=10
    )
    assert answer.choices[0].message.content
    print(
        f"\n{LINES} lines, max_cost_usd ${limit}: {completed} answered, "
        f"{failed} budget_exceeded, spent ${spent}"
    )
