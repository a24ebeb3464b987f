"""Fifty dispatchers against one $1 budget, on real Postgres: the ledger is never overshot.

Fifty threads of this process each run the real dispatcher (`workers.dispatch.dispatch_jobs`,
which reserves each call's maximum cost in one conditional UPDATE) on jobs of their own, all
starting together behind a barrier; the calls go through the broker to the stack's real
worker, which calls the emulator and settles each real cost in the ledger. A job the budget
is too full for now (calls in flight) is held and dispatched again by its thread. Jobs vary
in input size and in `max_tokens` (some without: the budget then bounds their output).

The prompts are order records, text whose tokens llmqueue's estimate (o200k, calibrated per
provider) counts at least as high as the emulator bills them. English prose is the other way
round: the emulator counts four characters a token, 1.4 times o200k's count and 1.17 times
the Anthropic-calibrated estimate, so a call's real input cost can pass its reservation and
the budget be passed by that difference (see `bench/budget.py --text prose`).

Shown: every job ends; the budget's spent equals the sum of the attempts' costs to 1e-8
and never passes the $1 limit (overspend exactly $0); nothing stays reserved; every job
refused says `budget_exceeded`; the emulator saw exactly one call per job that succeeded.
`bench/budget.py` runs the same with more jobs and reports the figures.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import func, select

from core.clock import utcnow
from core.types import ChatRequest
from jobstore import ledger
from jobstore.db import transaction
from jobstore.jobs import create_job, find_api_key
from jobstore.models import Attempt, Budget, Job
from routing.tokens import raw_request_tokens
from tests.integration.conftest import ENDED, Stack, make_key
from workers.dispatch import dispatch_jobs
from workers.messages import send_steps
from workers.next_step import SendAttempt

MODEL = "claude-sonnet-4-6"  # $3 in, $15 out per million: a few hundred jobs pass $1
MAX_TOKENS = (None, 16, 64, 256, 1024, 4096)
DISPATCHERS = 50


@dataclass
class Race:
    """What a run of the race left behind, read from the job store."""

    limit: Decimal
    spent: Decimal
    reserved: Decimal
    attempt_costs: Decimal
    job_costs: Decimal
    statuses: dict[str, int]
    errors: dict[str | None, int]
    held: int
    calls: int = 0
    wall_s: float = 0.0
    detail: dict[str, str] = field(default_factory=dict)

    @property
    def overspend(self) -> Decimal:
        return max(Decimal(0), self.spent - self.limit)


def records_prompt(rng: random.Random, i: int) -> str:
    """A prompt over 20 to 800 order records, of a shape whose tokens llmqueue's estimate covers."""
    rows = (
        json.dumps(
            {"order": f"ord-{rng.randint(10000, 99999)}", "qty": rng.randint(1, 50), "usd": rng.random()}
        )
        for _ in range(rng.randint(20, 800))
    )
    return f"Job {i}: total these orders by quantity.\n" + "\n".join(rows)


def make_jobs(owner_id: str, count: int, seed: int) -> list[str]:
    """Queued jobs of varied size, stored as the API stores them but not yet dispatched."""
    rng = random.Random(seed)
    ids = []
    with transaction() as session:
        for i in range(count):
            text = records_prompt(rng, i)
            request = ChatRequest.model_validate(
                {"messages": [{"role": "user", "content": text}], "max_tokens": rng.choice(MAX_TOKENS)}
            )
            job, _ = create_job(
                session,
                owner_id=owner_id,
                request=request,
                strategy="manual",
                model=MODEL,
                request_tokens=raw_request_tokens(request),
            )
            ids.append(job.id)
    return ids


def statuses(job_ids: list[str]) -> dict[str, str]:
    with transaction() as session:
        return dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())


def dispatcher(job_ids: list[str], start: threading.Barrier, held: list[int], deadline: float) -> None:
    """One dispatcher: route its jobs, send the calls to the worker, route again what was held."""
    start.wait()
    open_ids = list(job_ids)
    while open_ids and time.monotonic() < deadline:
        now = statuses(open_ids)
        queued = [j for j in open_ids if now[j] == "queued"]
        if queued:
            steps = dispatch_jobs(queued)
            send_steps(s for s in steps if isinstance(s, SendAttempt))
            with transaction() as session:  # held for calls in flight: requeued, to be routed again
                held[0] += int(
                    session.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.id.in_(queued), Job.status == "queued", Job.not_before.is_not(None))
                    )
                    or 0
                )
        open_ids = [j for j in open_ids if now[j] not in ENDED]
        time.sleep(0.1)


def run_race(owner_id: str, limit: Decimal, jobs: int, seed: int, timeout: float) -> Race:
    with transaction() as session:
        ledger.set_budget(session, owner_id, limit_usd=limit, now=utcnow())
    ids = make_jobs(owner_id, jobs, seed)
    start = threading.Barrier(DISPATCHERS)
    held = [0]
    deadline = time.monotonic() + timeout
    threads = [
        threading.Thread(target=dispatcher, args=(ids[i::DISPATCHERS], start, held, deadline), daemon=True)
        for i in range(DISPATCHERS)
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    wall = time.monotonic() - began
    with transaction() as session:
        budget = session.scalars(select(Budget).where(Budget.owner_id == owner_id)).one()
        attempt_costs = session.scalar(
            select(func.coalesce(func.sum(Attempt.cost_usd), 0)).join(Job).where(Job.owner_id == owner_id)
        )
        job_costs = session.scalar(
            select(func.coalesce(func.sum(Job.cost_usd), 0)).where(Job.owner_id == owner_id)
        )
        by_status = dict(
            session.execute(
                select(Job.status, func.count()).where(Job.owner_id == owner_id).group_by(Job.status)
            ).all()
        )
        by_error = dict(
            session.execute(
                select(Job.error_type, func.count())
                .where(Job.owner_id == owner_id, Job.status != "succeeded")
                .group_by(Job.error_type)
            ).all()
        )
        return Race(
            limit=Decimal(budget.limit_usd),
            spent=Decimal(budget.spent_usd),
            reserved=Decimal(budget.reserved_usd),
            attempt_costs=Decimal(attempt_costs or 0),
            job_costs=Decimal(job_costs or 0),
            statuses=by_status,
            errors=by_error,
            held=held[0],
            wall_s=wall,
        )


def test_fifty_dispatchers_never_overshoot_a_one_dollar_budget(stack: Stack) -> None:
    stack.emulator.configure({MODEL: {"latency_ms": 150}})  # calls stay in flight while others reserve
    with transaction() as session:
        owner = find_api_key(session, make_key("race"))
        assert owner is not None
        owner_id = owner.id
    race = run_race(owner_id, Decimal("1"), jobs=100, seed=12, timeout=25)

    assert sum(race.statuses.values()) == 100 and set(race.statuses) <= set(ENDED), race
    assert race.statuses.get("succeeded", 0) > 0 and race.statuses.get("failed", 0) > 0, race
    assert set(race.errors) == {"budget_exceeded"}, race  # every refused job says why
    assert race.spent <= race.limit and race.overspend == 0, race
    assert race.reserved == 0, race
    assert abs(race.spent - race.attempt_costs) <= Decimal("1e-8"), race
    assert race.job_costs == race.attempt_costs, race
    assert len(stack.emulator.calls(model=MODEL)) == race.statuses["succeeded"]  # none for a refused job
    print(
        f"\n50 dispatchers, 100 jobs, $1 budget: spent ${race.spent} (attempts ${race.attempt_costs}), "
        f"overspend ${race.overspend}, {race.statuses}, held {race.held} times, {race.wall_s:.1f} s"
    )
