"""Round robin across three deployments, shared by two dispatcher processes through Redis:
300 jobs land within one job of 100 on each deployment."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.routing_e2e.conftest import RR_DEPLOYMENTS, RoutingStack

JOBS = 300


def dispatch_tasks_done(log: list[str]) -> int:
    return sum(1 for line in log if "llmqueue.dispatch[" in line and " succeeded in " in line)


def test_round_robin_spreads_evenly_across_two_dispatchers(routing_stack: RoutingStack) -> None:
    stack = routing_stack
    before = [dispatch_tasks_done(d.log) for d in stack.dispatchers]

    def submit(i: int) -> str:
        r = stack.submit(
            {
                "messages": [{"role": "user", "content": f"rotate {i}"}],
                "model": "rr-mini",
                "strategy": "round_robin",
                "max_tokens": 16,
            }
        )
        assert r.status_code == 202, r.text
        job_id: str = r.json()["id"]
        return job_id

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(JOBS)))
        jobs = list(pool.map(lambda i: stack.wait(i, timeout=120), ids))

    assert all(j["status"] == "succeeded" for j in jobs)
    assert all(len(j["attempts"]) == 1 for j in jobs)  # no retry or failover skewed the count
    spread = Counter(j["deployment"] for j in jobs)
    assert set(spread) == set(RR_DEPLOYMENTS)
    assert all(abs(n - JOBS / len(RR_DEPLOYMENTS)) <= 1 for n in spread.values()), spread
    handled = [dispatch_tasks_done(d.log) - b for d, b in zip(stack.dispatchers, before, strict=True)]
    assert all(n > 0 for n in handled), handled  # both dispatcher processes took part
    assert sum(handled) <= JOBS  # the API coalesces ids committed together into one message
    assert {j["explanation"]["strategy"] for j in jobs} == {"round_robin"}
