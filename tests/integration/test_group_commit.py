"""POST /v1/jobs stores the jobs submitted together in one transaction (api/job_writer.py):
each request still gets its own answer, a job refused by its check fails alone, and every
accepted job is stored, dispatched and answered."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.conftest import Stack
from tests.integration.test_bad_input import jobs_of

SUBMISSIONS = 60


async def submit_together(stack: Stack) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {stack.key}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60) as client:

        async def one(i: int) -> httpx.Response:
            # Every third asks for more output than the model has: refused by the writer's check.
            max_tokens = 100_000 if i % 3 == 0 else 16
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"group commit {i}"}],
                "max_tokens": max_tokens,
            }
            return await client.post("/v1/jobs", json=body)

        return await asyncio.gather(*(one(i) for i in range(SUBMISSIONS)))


def test_jobs_submitted_together_are_answered_one_by_one(stack: Stack) -> None:
    responses = asyncio.run(submit_together(stack))
    accepted = [r for i, r in enumerate(responses) if i % 3]
    refused = [r for i, r in enumerate(responses) if i % 3 == 0]
    for r in refused:
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == "max_tokens"
    ids = []
    for r in accepted:
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["created"] is True
        assert r.headers["location"].endswith(f"/v1/jobs/{body['id']}")
        ids.append(body["id"])
    assert len(set(ids)) == len(accepted)
    assert jobs_of(stack.key) == len(accepted)  # committed before answering; the refused stored nothing
    for job_id in ids:
        assert stack.wait(job_id)["status"] == "succeeded"
