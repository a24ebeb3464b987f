"""The chaos suite's shortest case in `make test`: `bench/chaos.py`'s worker kill on a small
batch. A private Postgres and Redis, the emulator at 300 ms, the API, two dispatchers and two
provider workers; kill -9 of one provider worker once 30% of the batch has succeeded. Nothing
is lost, no cost is recorded twice, a call is made again only if it was in flight at the kill,
and the dead worker's calls are taken over within 30 s (its leases, on the database clock).
`make chaos` runs every case on batches of 5,000.

It takes about two minutes (most of it starting a private Postgres and four workers), too long
for `make test`: it runs with LLMQUEUE_CHAOS_TEST=1 (`make chaos-test`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.chaos import chaos_stack, worker_kill

DOCUMENTS = 200


@pytest.mark.skipif(not os.environ.get("LLMQUEUE_CHAOS_TEST"), reason="about 2 min: make chaos-test")
@pytest.mark.timeout(300)
def test_kill_9_of_a_provider_worker_loses_nothing_and_charges_nothing_twice(tmp_path: Path) -> None:
    with chaos_stack(tmp_path / "logs") as stack:
        outcome = worker_kill(stack, DOCUMENTS)
    assert outcome.lost == 0, outcome
    assert outcome.cost_twice == 0, outcome
    assert outcome.called_twice <= outcome.notes["calls_in_flight_at_kill"], outcome
    assert outcome.recovery_s is not None and outcome.recovery_s < 30, outcome
    assert outcome.all_alive, outcome
