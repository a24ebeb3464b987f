"""Failover and recovery on the real stack: OpenAI in outage, jobs fail over to another
provider and succeed; once the outage ends and the breaker's cooldown has passed, a probe
half-opens it, successful probes close it, and traffic ramps back to OpenAI."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from tests.routing_e2e.conftest import BREAKER_RAMP_S, RoutingStack

OPENAI = "openai/gpt-4o-mini"
AZURE = "azure/gpt-4o-mini"
# Under `cost` with this floor the cheapest eligible deployment is OpenAI's gpt-4o-mini (62),
# then Azure's (62, dearer): gemini flash lite (60) and the rest of the cheap models are out.
CHEAPEST_IS_OPENAI = {"strategy": "cost", "min_quality": 61}


def job_body(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **CHEAPEST_IS_OPENAI}


def wait_all(stack: RoutingStack, ids: list[str]) -> list[dict[str, Any]]:
    return [stack.wait(i, timeout=90) for i in ids]


def eventually_closed(stack: RoutingStack) -> dict:  # type: ignore[type-arg]
    """Workers write successes to the shared store up to half a second late."""
    deadline = time.monotonic() + 10
    while True:
        health = stack.deployment_health(OPENAI)
        if health["breaker"] == "closed" or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def test_outage_fails_over_then_traffic_returns_after_half_open(routing_stack: RoutingStack) -> None:
    stack = routing_stack
    preview = stack.client.post("/v1/route/preview", json=job_body("where to?")).json()
    assert [c["deployment"] for c in preview["candidates"][:2]] == [OPENAI, AZURE]

    stack.emulator.configure({"openai": {"outage": True}})
    jobs = wait_all(stack, [stack.submit(job_body(f"during the outage {i}")).json()["id"] for i in range(8)])
    for job in jobs:
        assert job["status"] == "succeeded", job
        assert job["provider"] != "openai"
        hops = job["attempts"]
        assert hops[0]["deployment"] == OPENAI and hops[0]["status"] == "failed"
        assert hops[-1]["status"] == "succeeded" and hops[-1]["deployment"] == job["deployment"]
        left_openai = [
            a for a in hops if a["deployment"] == OPENAI and a["error"]["type"].startswith("failover:")
        ]
        assert len(left_openai) == 1, hops  # the hop away from OpenAI is recorded on its last attempt
        assert all(a["status"] == "failed" for a in hops[:-1])
    assert {c["status"] for c in stack.emulator.calls(provider="openai")} == {503}
    tripped = stack.deployment_health(OPENAI)
    assert tripped["breaker"] == "open" and tripped["consecutive_failures"] >= 5

    stack.emulator.configure({})  # the outage ends
    reopens = datetime.fromisoformat(tripped["cooldown_until"])
    time.sleep(max(0.0, (reopens - datetime.now(UTC)).total_seconds()) + 0.2)

    probe = stack.wait(stack.submit(job_body("first after the outage")).json()["id"])
    assert probe["status"] == "succeeded" and probe["deployment"] == OPENAI
    assert [a["deployment"] for a in probe["attempts"]] == [OPENAI]
    assert stack.deployment_health(OPENAI)["breaker"] == "half_open"  # 1 of 3 probes succeeded

    probes = [stack.wait(stack.submit(job_body(f"probe {i}")).json()["id"]) for i in range(2)]
    assert [j["deployment"] for j in probes] == [OPENAI] * 2
    recovered = eventually_closed(stack)
    assert recovered["breaker"] == "closed" and recovered["cooldown_until"] is None
    assert recovered["consecutive_failures"] == 0 and recovered["accepting"] is True
    assert recovered["traffic_share"] < 1  # traffic ramps back over BREAKER_RAMP_S ...

    time.sleep(BREAKER_RAMP_S)
    assert stack.deployment_health(OPENAI)["traffic_share"] == 1.0  # ... and then it is all back
    after = [stack.wait(stack.submit(job_body(f"recovered {i}")).json()["id"]) for i in range(3)]
    assert [j["deployment"] for j in after] == [OPENAI] * 3
