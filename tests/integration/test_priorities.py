"""Message priorities on the real broker: with a provider queue backed up, a failed-over
job's attempt is served first, then jobs sent one by one, then a batch's jobs.

The azure queue has no worker in the session stack (see conftest.CRASH_TEST_QUEUE), so the
test lines up work in it and only then starts one single-threaded azure worker: the order
in which that worker claims the attempts is the order the broker served them.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from jobstore.db import transaction
from jobstore.models import Attempt, Job
from tests.integration.conftest import Stack, WorkerProcess
from tests.integration.test_document_batches import submit as submit_batch
from tests.integration.test_document_batches import wait as wait_batch

AZURE = "azure/gpt-4o-mini"


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 16, **extra}


def pending_on_azure(job_id: str) -> bool:
    with transaction() as session:
        found = session.scalar(
            select(Attempt.id).where(
                Attempt.job_id == job_id, Attempt.deployment == AZURE, Attempt.status == "pending"
            )
        )
    return found is not None


def wait_until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def azure_started_at(job_id: str) -> float:
    with transaction() as session:
        started = session.scalar(
            select(Attempt.started_at).where(Attempt.job_id == job_id, Attempt.deployment == AZURE)
        )
    assert started is not None, job_id
    return float(started.timestamp())


def test_failover_goes_ahead_of_single_jobs_which_go_ahead_of_a_batch(stack: Stack) -> None:
    stack.emulator.configure({"openai": {"script": [{"status": 401, "message": "bad key"}]}})
    batch = submit_batch(
        stack,
        jsonl="\n".join(f'{{"id": "d{i}", "text": "document {i}"}}' for i in range(4)),
        model=AZURE,
        max_tokens=16,
    )
    singles = [stack.submit(body(f"single {i}", model=AZURE)).json()["id"] for i in range(3)]
    # Manual routing with a fallback: OpenAI refuses the key, so the job fails over to Azure.
    failover = stack.submit(body("fail over", model="openai/gpt-4o-mini", fallbacks=[AZURE])).json()["id"]

    with transaction() as session:
        batch_jobs = list(session.scalars(select(Job.id).where(Job.batch_id == batch["id"])))
    assert len(batch_jobs) == 4
    every = [*batch_jobs, *singles, failover]
    wait_until(lambda: all(pending_on_azure(j) for j in every), "every job's attempt pending on azure")

    stack.emulator.configure({"azure": {"latency_ms": 20}})
    azure = WorkerProcess(queues="provider.azure", concurrency=1).start()
    try:
        done = wait_batch(stack, batch["id"])
        assert done["status"] == "completed", done
        jobs = {job_id: stack.wait(job_id) for job_id in [*singles, failover]}
    finally:
        azure.stop()
    assert all(job["status"] == "succeeded" for job in jobs.values()), jobs
    hops = [a["deployment"] for a in jobs[failover]["attempts"]]
    assert hops == ["openai/gpt-4o-mini", AZURE], hops

    failover_start = azure_started_at(failover)
    single_starts = [azure_started_at(j) for j in singles]
    batch_starts = [azure_started_at(j) for j in batch_jobs]
    assert failover_start < min(single_starts), "the failover waited behind new jobs"
    assert max(single_starts) < min(batch_starts), "a single job waited behind a batch"
