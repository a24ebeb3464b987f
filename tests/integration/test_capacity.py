"""Provider capacity on the real stack (issue 11), measured at the emulator.

- Two provider-worker processes sharing one deployment's `rpm` space their calls at its rate
  together (the admission is one atomic Redis booking): no 60-second window can hold more than
  `rpm` calls, and the emulator, enforcing the same limit, refuses none.
- A job pinned to a model whose capacity is booked waits for its slot, then succeeds there.
- A `cost` job whose first choice is saturated (its rate-limit headers said nothing is left
  this minute) spills to the next candidate, and its routing explanation says why.
- A deployment without credentials is no candidate: route preview names what to set; with
  nothing configured, a submission is a 422 naming the variables (an API process of its own,
  started with no keys and no emulator).

The provider.azure queue is served here by two workers of this module's own, whose catalog
gives azure/gpt-4o-mini an rpm of 20 (one call every ~3 s): small enough to see, quick to run.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis

from emulator.server import free_port
from routing.catalog import DEFAULT_CATALOG_PATH
from tests.integration.conftest import Stack, WorkerProcess, make_key

AZURE = "azure/gpt-4o-mini"
RPM = 20
SPACING_S = 60 / RPM  # the limiter paces at 98% of it: a little more


@pytest.fixture(scope="module")
def azure_workers(
    database: str, redis_clean: None, emulator_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    text = DEFAULT_CATALOG_PATH.read_text()
    old = 'base_url = "https://example-resource.openai.azure.com"'
    assert old in text
    catalog = tmp_path_factory.mktemp("capacity") / "catalog.toml"
    catalog.write_text(text.replace(old, f"{old}\nrpm = {RPM}"))
    # One call in flight each: while one worker sleeps until its booked slot, the other takes the next.
    env = {"LLMQUEUE_CATALOG": str(catalog), "LLMQUEUE_MAX_IN_FLIGHT": "1"}
    procs = [WorkerProcess(queues="provider.azure", concurrency=2, env=env) for _ in range(2)]
    try:
        for proc in procs:
            proc.start(timeout=120)  # a busy machine starts a worker slowly
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def ask(text: str, **routing: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 16, **routing}


def claimers(job_ids: list[str]) -> set[str]:
    """The worker processes that claimed these jobs' attempts (a claim token starts with its process)."""
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        rows = conn.execute("SELECT claim_token FROM attempts WHERE job_id = ANY(%s)", (job_ids,)).fetchall()
    return {str(token).split(":", 1)[0] for (token,) in rows}


def max_in_window(times: list[float], window_s: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u < t + window_s) for i, t in enumerate(times))


def test_two_workers_together_keep_a_deployments_rpm(
    stack: Stack, azure_workers: list[WorkerProcess]
) -> None:
    stack.emulator.configure({"azure": {"rpm": RPM}})  # the provider refuses what goes past it
    ids = []
    for i in range(4):  # one message each (ids committed together would share one, for one worker)
        ids.append(stack.submit(ask(f"paced {i}", model=AZURE)).json()["id"])
        time.sleep(0.3)
    jobs = [stack.wait(i) for i in ids]
    assert all(j["status"] == "succeeded" and len(j["attempts"]) == 1 for j in jobs), jobs
    calls = stack.emulator.calls(provider="azure")
    assert [c["status"] for c in calls] == [200] * 4  # not one 429
    times = sorted(c["t"] for c in calls)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # At the emulator, a call every 60/rpm s or more: so no 60 s window holds more than rpm calls.
    assert min(gaps) > SPACING_S * 0.9, gaps
    assert max_in_window(times, SPACING_S * 0.9) == 1
    assert len(claimers(ids)) == 2  # both processes called, sharing one booking


def test_a_pinned_job_waits_for_its_model_then_succeeds_there(
    stack: Stack, azure_workers: list[WorkerProcess]
) -> None:
    stack.emulator.configure({"azure": {"rpm": RPM}})
    first, second, third = (stack.submit(ask(f"pinned {i}", model=AZURE)).json()["id"] for i in range(3))
    done = stack.wait(first)
    waiting = stack.job(third)
    assert waiting["status"] in ("dispatched", "running"), waiting  # waiting for its slot, not failed over
    jobs = [done, stack.wait(second), stack.wait(third)]
    for job in jobs:
        assert job["status"] == "succeeded" and job["deployment"] == AZURE, job
        assert [a["deployment"] for a in job["attempts"]] == [AZURE]
    times = sorted(c["t"] for c in stack.emulator.calls(provider="azure"))
    assert len(times) == 3 and times[2] - times[0] > 2 * SPACING_S * 0.9
    assert not stack.emulator.calls(provider="openai")  # nothing went elsewhere


@pytest.fixture
def openai_capacity_cleared() -> Iterator[None]:
    """The learned limit and pause this test gives openai/gpt-4o-mini are removed after it."""
    yield
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in client.scan_iter(match=os.environ["LLMQUEUE_REDIS_PREFIX"] + "cap:openai/gpt-4o-mini*"):
        client.delete(key)


def test_a_saturated_first_choice_spills_to_the_next_candidate_saying_why(
    stack: Stack, azure_workers: list[WorkerProcess], openai_capacity_cleared: None
) -> None:
    # cost with a quality floor of 61: openai/gpt-4o-mini first, azure/gpt-4o-mini next.
    routing = {"strategy": "cost", "min_quality": 61}
    preview = stack.client.post("/v1/route/preview", json=ask("which", **routing)).json()
    assert [c["deployment"] for c in preview["candidates"][:2]] == ["openai/gpt-4o-mini", AZURE]
    # One call a minute: the first answer's headers say none is left until the minute is over.
    stack.emulator.configure({"openai": {"rpm": 1}})
    first = stack.wait(stack.submit(ask("first", **routing)).json()["id"])
    assert first["deployment"] == "openai/gpt-4o-mini" and "capacity" not in first["explanation"]
    second = stack.wait(stack.submit(ask("second", **routing)).json()["id"])
    assert second["status"] == "succeeded" and second["deployment"] == AZURE, second
    note = second["explanation"]["capacity"]
    assert note.startswith("capacity: first choice openai/gpt-4o-mini is saturated") and AZURE in note
    assert [c["status"] for c in stack.emulator.calls(provider="openai")] == [200]  # never a 429


def start_api(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmqueue.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not start: " + (proc.stdout.read() if proc.stdout else ""))


@pytest.fixture
def api_with_only_openai(api_server: Any) -> Iterator[tuple[str, str]]:
    """An API process with OPENAI_API_KEY as its only key and no emulator to stand in."""
    keys = ("ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "CO_API_KEY", "MISTRAL_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in keys and not k.startswith(("AWS_", "AZURE_"))}
    env.update(LLMQUEUE_EMULATOR_MODE="never", OPENAI_API_KEY="sk-test-only-openai")
    env.pop("OLLAMA_HOST", None)
    proc, url = start_api(env)
    try:
        yield url, make_key("credentials", admin=True)
    finally:
        proc.terminate()
        proc.wait(15)


def test_without_credentials_a_deployment_is_no_candidate_and_nothing_configured_is_a_422(
    api_with_only_openai: tuple[str, str],
) -> None:
    url, key = api_with_only_openai
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        check_only_openai_serves(client)


def check_only_openai_serves(client: httpx.Client) -> None:
    preview = client.post("/v1/route/preview", json=ask("who can", strategy="cost")).json()
    candidates = {c["deployment"] for c in preview["candidates"]}
    assert candidates and all(name.startswith("openai/") for name in candidates), candidates
    excluded = {e["deployment"]: e["reason"] for e in preview["excluded"]}
    assert excluded["anthropic/claude-haiku-4-5"] == "not configured: set ANTHROPIC_API_KEY"
    assert "AZURE_OPENAI_API_KEY" in excluded[AZURE]
    assert excluded["ollama/llama3.2"].startswith("not configured: set OLLAMA_HOST")
    listed = client.get("/v1/providers").json()["data"]
    deployments = {d["deployment"]: d for p in listed for d in p["deployments"]}
    assert deployments["anthropic/claude-haiku-4-5"]["not_configured"] == "set ANTHROPIC_API_KEY"
    assert deployments["openai/gpt-4o-mini"]["configured"] is True
    # Pinned to what only Anthropic serves: nothing configured can serve it.
    r = client.post("/v1/jobs", json=ask("no key", model="claude-haiku-4-5"))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "provider_not_configured" and "set ANTHROPIC_API_KEY" in error["message"]
    assert client.get("/v1/jobs").json()["data"] == []  # nothing was enqueued
