"""Economy mode on the real stack: batches whose deadline allows it go through the provider's
own batch API (the emulator's, through the official SDKs) at batch prices, and every line is
answered once, however the provider batch or its poller fares.

The session's shared worker routes and plans (its dispatcher loops); each test starts its own
provider-batch worker (`llmqueue worker -Q provider_batch`), which it may kill.
"""

from __future__ import annotations

import io
import json
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, insert, select

from core.clock import utcnow
from core.types import Usage
from jobstore import provider_batches as store
from jobstore.batch_models import Batch, BatchKind, BatchStatus, ProviderBatch
from jobstore.batches import HELD_UNTIL, job_row
from jobstore.db import session_factory, transaction
from jobstore.jobs import create_api_key
from jobstore.models import Attempt, Budget, Job
from routing.catalog import DEFAULT_CATALOG_PATH, catalog_from_dict, get_catalog
from routing.costs import settle_batch_cost, settle_cost
from tests.integration.conftest import Stack, WorkerProcess
from workers.economy_feeder import plan_jobs

ENDED_BATCH = ("completed", "failed", "cancelled", "expired")
FAST_POLLS = {"LLMQUEUE_PROVIDER_BATCH_POLL_S": "0.3", "LLMQUEUE_PROVIDER_BATCH_POLL_MAX_S": "1"}


def provider_batch_worker() -> WorkerProcess:
    return WorkerProcess(queues="provider_batch", concurrency=4, env=FAST_POLLS).start()


@pytest.fixture
def pb_worker(stack: Stack) -> Iterator[WorkerProcess]:
    worker = provider_batch_worker()
    yield worker
    worker.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=0, timeout=120)


def emulate_batches(stack: Stack, **settings: Any) -> None:
    """The emulator's batch behaviour for this test (and no batch left from another)."""
    httpx.delete(f"{stack.emulator.url}/_emulator/batches").raise_for_status()
    httpx.post(f"{stack.emulator.url}/_emulator/config", json={"batch": settings}).raise_for_status()


def emulated_batches(stack: Stack) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(f"{stack.emulator.url}/_emulator/batches").json()
    return rows


def online_calls(stack: Stack) -> list[dict[str, Any]]:
    """Online chat calls the emulator answered (its batch operations are logged apart)."""
    return [c for c in stack.emulator.calls(kind="chat") if c["scope"] != "batch"]


def request_line(custom_id: str, text: str, model: str, max_tokens: int = 50) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def openai_batch(client: openai.OpenAI, lines: list[str], **extra: Any) -> str:
    data = ("\n".join(lines) + "\n").encode()
    file_id = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch").id
    return client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", extra_body=extra
    ).id


def wait_batch(client: openai.OpenAI, batch_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ENDED_BATCH:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.3)


def jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line]


def wait_for(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def provider_batches(batch_id: str) -> list[ProviderBatch]:
    with transaction() as session:
        return list(session.scalars(select(ProviderBatch).where(ProviderBatch.batch_id == batch_id)))


def jobs_of(batch_id: str) -> list[Job]:
    with transaction() as session:
        return list(session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.line_number)))


def usage_of(job: Job) -> Usage:
    return Usage(input_tokens=job.input_tokens, output_tokens=job.output_tokens)


def document_batch(stack: Stack, count: int, model: str = "gpt-4o-mini", **form: str) -> dict[str, Any]:
    docs = "\n".join(
        json.dumps({"id": f"doc-{i}", "text": f"Document {i}: the river rose {i} feet in spring."})
        for i in range(count)
    )
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": model, "max_tokens": "40", **form},
        files=[("jsonl", ("docs.jsonl", docs.encode()))],
    )
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_document_batch(stack: Stack, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = stack.client.get(f"/v1/document_batches/{batch_id}").json()
        if body["status"] in ENDED_BATCH:
            return body
        assert time.monotonic() < deadline, f"document batch still {body['status']}: {body['counts']}"
        time.sleep(0.3)


@pytest.mark.parametrize(
    ("model", "deployment"),
    [
        ("gpt-4o-mini", "openai/gpt-4o-mini"),
        ("azure/gpt-4o-mini", "azure/gpt-4o-mini"),
        ("claude-haiku-4-5", "anthropic/claude-haiku-4-5"),
        ("gemini-2.5-flash", "gemini/gemini-2.5-flash"),
        ("mistral-small-latest", "mistral/mistral-small"),
    ],
)
def test_economy_document_batch_goes_by_provider_batch_at_batch_prices(
    stack: Stack, pb_worker: WorkerProcess, model: str, deployment: str
) -> None:
    emulate_batches(stack, completion_s=1.0)
    created = document_batch(stack, 40, model=model, delivery="economy")
    assert created["delivery"] == "economy"
    done = wait_document_batch(stack, created["id"])
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 40
    assert done["jobs_by_path"] == {"provider_batch": 40, "online": 0, "deciding": 0, "none": 0}
    [pb] = done["provider_batches"]
    spec = get_catalog().models[model]
    assert pb["provider"] == spec.provider and pb["deployment"] == deployment
    assert pb["phase"] == "settled" and pb["state"] == "completed" and pb["lines"] == 40
    assert pb["lines_succeeded"] == 40 and pb["reason"].startswith(
        f"provider batch: {spec.provider} batch API"
    )
    assert online_calls(stack) == []  # not one line bought online
    [emulated] = emulated_batches(stack)
    assert pb["provider_batch_id"].endswith(emulated["id"]) and emulated["total"] == 40
    total = Decimal(0)
    for job in jobs_of(created["id"]):
        assert job.status == "succeeded" and job.provider_batch_id == pb["id"] and job.attempt_count == 1
        assert job.cost_usd == settle_batch_cost(spec, usage_of(job)) > 0  # batch prices, once
        total += job.cost_usd
    assert Decimal(done["cost_usd"]) == total == Decimal(pb["cost_usd"])
    job = stack.job(jobs_of(created["id"])[0].id)
    assert job["provider_batch_id"] == pb["id"] and job["attempts"][0]["provider_batch_id"] == pb["id"]
    economy = job["explanation"]["economy"]
    assert economy["mode"] == "provider_batch" and economy["provider_batch"] == pb["id"]
    assert "give_up_at" in economy and economy["reason"] == pb["reason"]
    rows = [
        json.loads(line)
        for line in stack.client.get(f"/v1/document_batches/{created['id']}/results").text.splitlines()
    ]
    assert {row["provider_batch_id"] for row in rows} == {pb["id"]}


def test_a_document_batch_without_a_deadline_goes_online_and_says_why(stack: Stack) -> None:
    created = document_batch(stack, 5, delivery="auto")  # no deadline_s: answers wanted now
    done = wait_document_batch(stack, created["id"])
    assert (
        done["counts"]["succeeded"] == 5 and done["provider_batches"] == [] and done["jobs_by_path"] is None
    )
    small = document_batch(stack, 5, deadline_s=str(3 * 86400))  # a deadline, but too little to save
    done = wait_document_batch(stack, small["id"])
    assert done["jobs_by_path"] == {"provider_batch": 0, "online": 5, "deciding": 0, "none": 0}
    job = stack.job(jobs_of(small["id"])[0].id)
    economy = job["explanation"]["economy"]
    assert economy["mode"] == "online" and "not worth the wait" in economy["reason"]
    assert job["explanation"]["candidates"]  # the dispatcher's own explanation is kept beside it


def test_5000_requests_with_a_24h_window_cost_at_most_52_percent_of_online(
    stack: Stack, client: openai.OpenAI, pb_worker: WorkerProcess
) -> None:
    emulate_batches(stack, completion_s=15.0)
    lines = [
        request_line(
            f"req-{i}", f"Summarise document {i}: the harbour froze in {1900 + i % 120}.", "gpt-4o-mini"
        )
        for i in range(5000)
    ]
    economy_id = openai_batch(client, lines)
    [pb] = wait_for(
        "the provider batch in progress",
        lambda: [p for p in provider_batches(economy_id) if p.provider_state == "in_progress"],
        timeout=120,
    )
    # Its 5,000 lines are not online work: a batch sent meanwhile is not held behind them (the
    # feeder's window of batch jobs in flight is 1,000).
    quick = wait_batch(client, openai_batch(client, lines[:100], delivery="online"))
    assert quick.status == "completed" and quick.request_counts.completed == 100
    [pb] = provider_batches(economy_id)
    assert pb.ended_at is None  # still at the provider
    economy = wait_batch(client, economy_id, timeout=300)
    online = wait_batch(client, openai_batch(client, lines, delivery="online"), timeout=300)
    for batch in (economy, online):
        assert batch.status == "completed" and batch.request_counts.completed == 5000
        answered = [row["custom_id"] for row in jsonl(client, batch.output_file_id)]
        errors = [row["custom_id"] for row in jsonl(client, batch.error_file_id)]
        assert sorted(answered + errors) == sorted(f"req-{i}" for i in range(5000))  # each once
    seen = client.batches.retrieve(economy.id).model_extra or {}
    [pb_seen] = seen["provider_batches"]
    assert pb_seen["lines"] == 5000 and pb_seen["lines_succeeded"] == 5000 and pb_seen["state"] == "completed"
    assert seen["jobs_by_path"]["provider_batch"] == 5000
    assert (client.batches.retrieve(online.id).model_extra or {})["jobs_by_path"] is None  # online only
    assert len(online_calls(stack)) == 5100  # the online runs', and no line of the economy run
    economy_cost = Decimal((economy.model_extra or {})["cost_usd"])
    online_cost = Decimal((online.model_extra or {})["cost_usd"])
    assert online_cost > 0 and economy_cost / online_cost <= Decimal("0.52")


def attempts_of(job_ids: list[str]) -> dict[str, list[Attempt]]:
    with transaction() as session:
        rows = session.scalars(select(Attempt).where(Attempt.job_id.in_(job_ids)).order_by(Attempt.number))
        found: dict[str, list[Attempt]] = {job_id: [] for job_id in job_ids}
        for attempt in rows:
            found[attempt.job_id].append(attempt)
        return found


def budget_of(batch_id: str) -> Budget:
    with transaction() as session:
        budget = session.scalar(select(Budget).where(Budget.batch_id == batch_id))
        assert budget is not None
        return budget


def test_poller_killed_mid_batch_and_failed_lines_go_online_once(stack: Stack, client: openai.OpenAI) -> None:
    emulate_batches(stack, completion_s=8.0, line_failure_rate=0.1)
    lines = [request_line(f"req-{i}", f"Tell me about lighthouse {i}.", "gpt-4o") for i in range(300)]
    batch_id = openai_batch(client, lines, max_cost_usd="5")
    first = provider_batch_worker()
    try:
        running = wait_for(
            "the provider batch in progress",
            lambda: [pb for pb in provider_batches(batch_id) if pb.provider_state == "in_progress"],
        )
        assert budget_of(batch_id).reserved_usd > 0  # the lines' most, at batch prices, held
    finally:
        first.kill()  # SIGKILL: no goodbye, whatever it was doing
    [pb] = running
    [emulated] = emulated_batches(stack)
    assert emulated["status"] == "in_progress" and emulated["done"] < 300  # killed mid-batch
    second = provider_batch_worker()
    try:
        done = wait_batch(client, batch_id, timeout=240)
    finally:
        second.stop()
    assert done.status == "completed" and done.request_counts.completed == 300
    output = jsonl(client, done.output_file_id)
    assert len(output) == 300 and done.error_file_id is None
    answered_by = Counter(row["response"]["body"]["llmqueue"]["provider_batch_id"] for row in output)
    [emulated] = emulated_batches(stack)  # one provider batch: nothing was submitted twice
    failed_by_provider = emulated["errored"]
    assert emulated["status"] == "completed" and 0 < failed_by_provider < 60
    assert len(online_calls(stack)) == failed_by_provider  # those lines online, and only those
    jobs = jobs_of(batch_id)
    attempts = attempts_of([j.id for j in jobs])
    model = get_catalog().models["gpt-4o"]
    went_online = [j for j in jobs if j.provider_batch_id is None]
    assert len(went_online) == failed_by_provider
    assert answered_by == {pb.id: 300 - failed_by_provider, None: failed_by_provider}  # each line's way
    for job in jobs:
        tries = attempts[job.id]
        assert job.status == "succeeded" and [a.status for a in tries].count("succeeded") == 1
        if job.provider_batch_id is None:  # its line failed at the provider, then one online call
            assert [(a.status, a.provider_batch_id) for a in tries] == [
                ("failed", pb.id),
                ("succeeded", None),
            ]
            assert job.cost_usd == settle_cost(model, usage_of(job))
        else:
            assert len(tries) == 1 and tries[0].provider_batch_id == pb.id
            assert job.cost_usd == settle_batch_cost(model, usage_of(job))
    budget = budget_of(batch_id)
    assert budget.reserved_usd == 0 and budget.spent_usd == sum(j.cost_usd for j in jobs)  # charged once
    [settled] = provider_batches(batch_id)
    assert settled.phase == "settled" and settled.lines_online == failed_by_provider
    assert settled.lines_succeeded == 300 - failed_by_provider


def test_cancel_before_completion_keeps_and_charges_the_lines_already_done(
    stack: Stack, pb_worker: WorkerProcess
) -> None:
    emulate_batches(stack, completion_s=20.0)
    created = document_batch(stack, 60, delivery="economy")
    wait_for("a third of the lines done", lambda: [b for b in emulated_batches(stack) if b["done"] >= 20])
    r = stack.client.post(f"/v1/document_batches/{created['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelling"
    done = wait_document_batch(stack, created["id"])
    [emulated] = emulated_batches(stack)
    assert done["status"] == "cancelled" and emulated["status"] == "cancelled"
    kept = emulated["succeeded"]
    assert 20 <= kept < 60
    assert done["counts"]["succeeded"] == kept and done["counts"]["cancelled"] == 60 - kept
    [pb] = done["provider_batches"]
    assert pb["state"] == "cancelled" and pb["lines_succeeded"] == kept and pb["lines_cancelled"] == 60 - kept
    model = get_catalog().models["gpt-4o-mini"]
    for job in jobs_of(created["id"]):
        if job.status == "succeeded":
            assert job.result_text and job.cost_usd == settle_batch_cost(model, usage_of(job)) > 0
        else:
            assert job.status == "cancelled" and job.cost_usd == 0
    assert Decimal(done["cost_usd"]) == Decimal(pb["cost_usd"]) > 0
    assert online_calls(stack) == []  # the cancelled lines were not bought elsewhere


def test_lines_the_provider_batch_never_ran_go_online(stack: Stack, pb_worker: WorkerProcess) -> None:
    emulate_batches(stack, completion_s=30.0)
    created = document_batch(stack, 40, delivery="economy")
    [emulated] = wait_for("ten lines done", lambda: [b for b in emulated_batches(stack) if b["done"] >= 10])
    httpx.post(f"{stack.emulator.url}/_emulator/batches/{emulated['id']}/expire").raise_for_status()
    done = wait_document_batch(stack, created["id"])
    [emulated] = emulated_batches(stack)
    ran = emulated["done"]
    assert done["status"] == "completed" and done["counts"]["succeeded"] == 40
    assert emulated["status"] == "expired" and len(online_calls(stack)) == 40 - ran
    assert done["jobs_by_path"]["provider_batch"] == ran and done["jobs_by_path"]["online"] == 40 - ran
    job = next(j for j in jobs_of(created["id"]) if j.provider_batch_id is None)
    economy = stack.job(job.id)["explanation"]["economy"]
    assert economy["mode"] == "online" and "window closed before the line ran" in economy["reason"]
    with transaction() as session:
        expired = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.error_type == "batch_expired")
        )
    assert expired == 40 - ran


def test_the_planner_keeps_a_deployment_within_its_enqueued_token_quota(
    database: str, redis_clean: None
) -> None:
    """The planner itself, on the real database, in a transaction never committed (so the
    session's dispatcher never sees the batch), with a catalog whose deployment has a quota."""
    data = tomllib.loads(DEFAULT_CATALOG_PATH.read_text())
    for deployment in data["deployments"]:
        if deployment["name"] == "openai/gpt-4o-mini":
            deployment["batch_enqueued_tokens"] = 200
    catalog = catalog_from_dict(data)
    now = utcnow()
    session = session_factory()()
    try:
        key, _ = create_api_key(session, "quota")
        batch = Batch(
            owner_id=key.id,
            kind=BatchKind.OPENAI,
            status=BatchStatus.IN_PROGRESS,
            options={"delivery": "economy"},
            created_at=now,
            in_progress_at=now,
            expires_at=now + timedelta(hours=24),
            total=30,
        )
        session.add(batch)
        session.flush()
        request = {"messages": [{"role": "user", "content": "a note about the tides"}], "max_tokens": 20}
        session.execute(
            insert(Job),
            [
                job_row(
                    batch,
                    request=request,
                    custom_id=f"r{i}",
                    line_number=i,
                    model="gpt-4o-mini",
                    strategy="manual",
                )
                for i in range(30)
            ],
        )
        jobs = store.economy_held(session, batch.id, 100)
        [pb_id] = plan_jobs(session, batch, jobs, catalog, now)
        pb = session.get(ProviderBatch, pb_id)
        assert pb is not None and 0 < pb.line_count < 30 and pb.input_tokens <= 200
        fresh = select(Job).where(Job.batch_id == batch.id).execution_options(populate_existing=True)
        held = {j.id: j for j in session.scalars(fresh)}
        online = [j for j in held.values() if j.provider_batch_id is None]
        assert len(online) == 30 - pb.line_count
        assert all(j.not_before == HELD_UNTIL and j.status == "queued" for j in online)  # to the feeder
        reason = online[0].routing["economy"]["reason"]
        assert reason.startswith("online: the enqueued-token quota of openai/gpt-4o-mini is full")
        lines = [j for j in held.values() if j.provider_batch_id == pb_id]
        assert all(
            j.status == "running" and j.explanation["economy"]["mode"] == "provider_batch" for j in lines
        )
    finally:
        session.rollback()
        session.close()


def test_an_unknown_mode_is_refused_naming_it(stack: Stack, client: openai.OpenAI) -> None:
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "delivery": "cheapest"},
        files=[("jsonl", ("docs.jsonl", b'{"id": "a", "text": "x"}'))],
    )
    assert r.status_code == 422 and r.json()["error"]["param"] == "delivery", r.text
    data = io.BytesIO((request_line("a", "x", "gpt-4o-mini") + "\n").encode())
    file_id = client.files.create(file=("requests.jsonl", data), purpose="batch").id
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            extra_body={"delivery": "cheapest"},
        )
    assert "delivery: Input should be 'auto', 'economy' or 'online'" in str(refused.value)
