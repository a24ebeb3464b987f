"""A cancel gives back the budget its jobs reserved at dispatch.

Dispatch reserves each routed job's expected cost against the key's budget until its call
settles. Jobs here are routed to provider.azure, a queue no worker of the shared stack
serves, so they stay dispatched with their attempts pending and their reservations held;
then a job (POST /v1/jobs/{id}/cancel) or a whole document batch is cancelled, and the key's
reserved amount must be back to zero, the budget whole for the next jobs.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

from sqlalchemy import func, select

from jobstore.db import transaction
from jobstore.models import Attempt, Job
from tests.integration.conftest import Stack
from tests.integration.test_document_batches import submit
from workers.dispatch_context import BUDGETS_CACHE_S

MODEL = "azure/gpt-4o-mini"  # provider.azure: no worker of the shared stack takes its messages


def reserved(stack: Stack) -> Decimal:
    return Decimal(stack.client.get("/v1/keys/self").json()["budget"]["reserved_usd"])


def wait_pending(job_ids: list[str], timeout: float = 30) -> None:
    """Until every job is dispatched with its attempt pending in the provider queue."""
    deadline = time.monotonic() + timeout
    while True:
        with transaction() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(Attempt)
                .join(Job, Job.id == Attempt.job_id)
                .where(Attempt.job_id.in_(job_ids), Attempt.status == "pending", Job.status == "dispatched")
            )
        if pending == len(job_ids):
            return
        assert time.monotonic() < deadline, f"{pending} of {len(job_ids)} dispatched"
        time.sleep(0.1)


def with_budget(stack: Stack, admin_stack: Stack) -> None:
    key_id = stack.client.get("/v1/keys/self").json()["id"]
    admin_stack.client.put(f"/v1/keys/{key_id}/budget", json={"limit_usd": "5"}).raise_for_status()
    time.sleep(BUDGETS_CACHE_S + 0.3)  # the dispatcher knows which keys have a budget this late


def test_cancelling_a_dispatched_job_gives_its_reservation_back(stack: Stack, admin_stack: Stack) -> None:
    with_budget(stack, admin_stack)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "cancel me while I wait"}]}
    job_id = stack.submit(body).json()["id"]
    wait_pending([job_id])
    assert reserved(stack) > 0

    r = stack.client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert reserved(stack) == 0
    with transaction() as session:
        statuses = list(session.scalars(select(Attempt.status).where(Attempt.job_id == job_id)))
    assert statuses == ["cancelled"]


def test_cancelling_a_batch_gives_its_dispatched_jobs_reservations_back(
    stack: Stack, admin_stack: Stack
) -> None:
    with_budget(stack, admin_stack)
    jsonl = "".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(4))
    batch = submit(stack, jsonl=jsonl, model=MODEL)
    deadline = time.monotonic() + 30
    while True:
        with transaction() as session:
            job_ids = list(session.scalars(select(Job.id).where(Job.batch_id == batch["id"])))
        if len(job_ids) == 4:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    wait_pending(job_ids)
    assert reserved(stack) > 0

    r = stack.client.post(f"/v1/document_batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    assert reserved(stack) == 0
