"""A hundred SSE clients at once on the real stack (the per-key cap), each served to its `done`,
while the API keeps answering: an open stream holds no database connection, so the pool is
never exhausted and `/healthz` and a job lookup stay quick. `bench/sse.py` does the same with
a thousand clients and times `/healthz` throughout."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import psycopg

from tests.integration.conftest import Stack

MODEL = "gpt-4o-mini"
CLIENTS = 100  # LLMQUEUE_MAX_STREAMS_PER_KEY's default: all on one key
JOBS = 20  # five clients a job


async def read_stream(client: httpx.AsyncClient, job_id: str, opened: list[str]) -> dict[str, Any]:
    events: list[tuple[str, Any]] = []
    async with client.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
        status = response.status_code
        opened.append(job_id)
        kind = "message"
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[len("data: ") :])))
    done = [data for kind, data in events if kind == "done"]
    return {"status": status, "deltas": sum(1 for kind, _ in events if kind == "delta"), "done": done}


def held_connections() -> list[tuple[str, str]]:
    """The test database's connections sitting in a transaction begun over 2 s ago: held across
    a stream, not caught between two statements of a short transaction."""
    url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT state, left(query, 80) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%' "
            "AND xact_start < now() - interval '2 seconds'"
        ).fetchall()
    return [(str(state), str(query)) for state, query in rows]


async def run(stack: Stack, job_ids: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {stack.key}"}
    limits = httpx.Limits(max_connections=CLIENTS + 10)
    async with httpx.AsyncClient(
        base_url=stack.api_url, headers=headers, timeout=60, limits=limits
    ) as client:
        opened: list[str] = []
        readers = [
            asyncio.create_task(read_stream(client, job_ids[i % JOBS], opened)) for i in range(CLIENTS)
        ]
        deadline = time.monotonic() + 30
        while len(opened) < CLIENTS and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.5)  # longer than any short transaction: a held one shows
        # Every stream open (most jobs still running): the API answers at once from the pool.
        while_open: dict[str, Any] = {"opened": len(opened)}
        start = time.monotonic()
        health = await client.get("/healthz")
        lookup = await client.get(f"/v1/jobs/{job_ids[0]}")
        while_open["seconds"] = time.monotonic() - start
        while_open["statuses"] = (health.status_code, lookup.status_code)
        while_open["held"] = await asyncio.to_thread(held_connections)
        statuses = [(await client.get(f"/v1/jobs/{j}")).json()["status"] for j in job_ids]
        while_open["running"] = sum(1 for status in statuses if status != "succeeded")
        return list(await asyncio.gather(*readers)), while_open


def test_a_hundred_streams_are_all_served_and_the_api_keeps_answering(stack: Stack) -> None:
    # Each call waits 5 s, then sends its words 20 ms apart: the streams are open together.
    stack.emulator.configure({MODEL: {"latency_ms": 5000, "stream_chunk_ms": 20}})
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "many readers"}]}
    job_ids = []
    for _ in range(JOBS):
        r = stack.submit(body)
        assert r.status_code == 202, r.text
        job_ids.append(r.json()["id"])

    reads, while_open = asyncio.run(run(stack, job_ids))

    assert while_open["opened"] == CLIENTS
    assert while_open["statuses"] == (200, 200)
    assert while_open["seconds"] < 5, while_open  # not a pool timeout (10 s) away
    assert while_open["held"] == [], while_open  # no stream sits on a connection
    assert all(r["status"] == 200 for r in reads), [r["status"] for r in reads]
    for read in reads:
        assert read["deltas"] > 0 and [d["status"] for d in read["done"]] == ["succeeded"], read
    assert len(stack.emulator.calls(model=MODEL)) == JOBS


def test_a_stalled_download_holds_no_transaction(stack: Stack) -> None:
    """A client that stops reading a file's content (or goes away) half-way leaves no database
    connection in an open transaction: the route's session ends with its function, and each
    part is read in a session of its own."""
    line = json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/chat/completions", "body": {}})
    content = ((line + " " * 200 + "\n") * 12_000).encode()  # about 3.5 MiB: four parts
    uploaded = stack.client.post(
        "/v1/files", files={"file": ("big.jsonl", content)}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    with stack.client.stream("GET", f"/v1/files/{file_id}/content") as response:
        assert response.status_code == 200
        first = next(response.iter_bytes())
        assert first and content.startswith(first)
        time.sleep(2.5)  # stalled: the rest waits in the server
        assert held_connections() == []
    time.sleep(2.5)  # and gone
    assert held_connections() == []
    whole = stack.client.get(f"/v1/files/{file_id}/content")
    assert whole.content == content
