"""Streaming on the real stack, for every provider that streams: a job submitted with
`stream: true`, read through `GET /v1/jobs/{id}/stream` (SSE) while the worker's SDK is
still receiving chunks from the emulator (one word per chunk, `stream_chunk_ms` apart).

"Before the job finishes" is proven by order, not by timing: the first delta is in hand
while the API still reports the job `running`, and before the job's `finished_at`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack, WorkerProcess

STREAMING_MODELS = {
    "openai": "gpt-4o-mini",
    "azure": "azure/gpt-4o-mini",
    "anthropic": "claude-haiku-4-5",
    "gemini": "gemini-2.5-flash-lite",
    "cohere": "command-r7b-12-2024",
    "mistral": "mistral-small-latest",
    "bedrock": "amazon.nova-lite-v1:0",
    "ollama": "llama3.2",
}
# 24 words: the emulator's answer echoes them, so about 30 chunks of 100 ms each.
PROMPT = (
    "Streaming lets a client show tokens as they are generated instead of waiting for the "
    "whole answer to arrive at once from the provider here"
)
LATE_AFTER_DELTAS = 5


@dataclass
class SseRead:
    """What one SSE client saw: each event in order, with the wall-clock time it arrived."""

    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)

    def deltas(self) -> list[str]:
        return [str(data["text"]) for kind, data, _ in self.events if kind == "delta"]

    def text(self) -> str:
        return "".join(self.deltas())

    def done(self) -> dict[str, Any]:
        (final,) = [data for kind, data, _ in self.events if kind == "done"]
        return final


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any], float]]:
    kind, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]
        elif not line and data:
            yield kind, json.loads(data), datetime.now(UTC).timestamp()
            kind, data = "message", ""


def read_all(stack: Stack, job_id: str) -> SseRead:
    seen = SseRead()
    client = httpx.Client(base_url=stack.api_url, headers=stack.client.headers, timeout=60)
    with client, client.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        seen.events.extend(sse_events(response))
    return seen


@pytest.fixture(scope="module")
def azure_worker(worker: WorkerProcess) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(queues="provider.azure", concurrency=4).start()
    yield proc
    proc.stop()


@pytest.mark.parametrize("provider", list(STREAMING_MODELS))
def test_deltas_arrive_while_the_job_runs_and_add_up_to_the_stored_result(
    stack: Stack, azure_worker: WorkerProcess, provider: str
) -> None:
    stack.emulator.configure({provider: {"stream_chunk_ms": 100}})
    body = {
        "model": STREAMING_MODELS[provider],
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    r = stack.submit(body)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    early = SseRead()
    status_at_first_delta = None
    late: Future[SseRead] | None = None
    with ThreadPoolExecutor(1) as pool, stack.client.stream("GET", f"/v1/jobs/{job_id}/stream") as response:
        assert response.status_code == 200
        for kind, data, at in sse_events(response):
            early.events.append((kind, data, at))
            n_deltas = len(early.deltas())
            if kind == "delta" and n_deltas == 1:
                status_at_first_delta = stack.job(job_id)["status"]
            if kind == "delta" and n_deltas == LATE_AFTER_DELTAS:
                assert stack.job(job_id)["status"] == "running"  # so the second client is late, not after
                late = pool.submit(read_all, stack, job_id)
        assert late is not None, early.events
        late_read = late.result(timeout=60)

    job = stack.wait(job_id)
    assert job["status"] == "succeeded", job
    assert status_at_first_delta == "running"
    finished_at = datetime.fromisoformat(job["finished_at"]).timestamp()
    first_delta_at = next(at for kind, _, at in early.events if kind == "delta")
    assert first_delta_at < finished_at
    assert len(early.deltas()) >= 20  # the text really came in pieces
    assert early.text() == job["result"] == early.done()["result"]
    assert early.done()["status"] == "succeeded"
    assert late_read.text() == job["result"]
    assert late_read.done()["status"] == "succeeded"
    assert [c["status"] for c in stack.emulator.calls(provider=provider)] == [200]


def test_a_job_submitted_without_stream_arrives_as_one_delta(stack: Stack) -> None:
    r = stack.submit({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "not streamed"}]})
    job_id = r.json()["id"]
    seen = read_all(stack, job_id)
    job = stack.job(job_id)
    assert job["status"] == "succeeded"
    assert seen.deltas() == [job["result"]]
    assert seen.done()["result"] == job["result"]


def test_a_failed_streamed_job_ends_with_done_carrying_the_error(stack: Stack) -> None:
    stack.emulator.configure({"gpt-4o-mini": {"script": [{"status": 400, "message": "bad temperature"}]}})
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "fail me"}]}
    job_id = stack.submit(body).json()["id"]
    seen = read_all(stack, job_id)
    assert seen.deltas() == []
    final = seen.done()
    assert final["status"] == "failed"
    assert final["error"]["type"] == "invalid_request" and "bad temperature" in final["error"]["message"]


def test_streaming_someone_elses_job_is_404(stack: Stack) -> None:
    from tests.integration.conftest import make_key

    job_id = stack.submit({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mine"}]}).json()[
        "id"
    ]
    other = httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {make_key('other')}"})
    r = other.get(f"/v1/jobs/{job_id}/stream")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "job_not_found"


def test_a_key_past_its_open_streams_gets_429_until_one_closes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "max_streams_per_key", 2)  # the in-process API's setting
    stack.emulator.configure({"gpt-4o-mini": {"latency_ms": 4000}})
    job_id = stack.submit({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "slow"}]}).json()[
        "id"
    ]
    with httpx.Client(base_url=stack.api_url, headers=dict(stack.client.headers), timeout=30) as client:
        with client.stream("GET", f"/v1/jobs/{job_id}/stream") as first:
            assert first.status_code == 200
            with client.stream("GET", f"/v1/jobs/{job_id}/stream") as second:
                assert second.status_code == 200
                third = client.get(f"/v1/jobs/{job_id}/stream")
                assert third.status_code == 429, third.text
                assert third.json()["error"]["code"] == "too_many_streams"
        # Both closed: the key's count is back, and a stream reads the job to its end.
        deadline = time.monotonic() + 5
        while True:
            with client.stream("GET", f"/v1/jobs/{job_id}/stream") as again:
                if again.status_code == 200:
                    events = [name for name, _, _ in sse_events(again)]
                    break
            assert time.monotonic() < deadline, "the closed streams were not counted out"
            time.sleep(0.1)
    assert events[-1] == "done"
