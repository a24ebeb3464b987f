"""An embedding batch fails over on the real stack, and stays on its model: one deployment of a
two-deployment model is in outage (every call 503), and every chunk is embedded by the other,
with the vectors the model makes; no call ever goes to another embedding model."""

from __future__ import annotations

import json
import time
from typing import Any

from emulator.embeddings import embed as emulator_vector
from tests.embedding_support import close
from tests.routing_e2e.conftest import EMBED_DEPLOYMENTS, EMBED_MODEL, RoutingStack

EAST, PROFILE = EMBED_DEPLOYMENTS  # deployment names
EAST_ID, PROFILE_ID = EMBED_DEPLOYMENTS.values()  # the model ids they call (emulator scopes)


def wait_batch(stack: RoutingStack, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = stack.client.get(f"/v1/document_batches/{batch_id}").json()
        if batch["status"] in ("completed", "cancelled", "failed"):
            return batch
        assert time.monotonic() < deadline, f"still {batch['status']}: {batch['counts']}"
        time.sleep(0.2)


def test_outage_on_one_deployment_fails_over_to_the_same_model(routing_stack: RoutingStack) -> None:
    stack = routing_stack
    stack.emulator.configure({EAST_ID: {"outage": True}})
    text = " ".join(f"Sentence {i} of the harbour log tells of storms and lamps." for i in range(60))
    r = stack.client.post(
        "/v1/document_batches",
        data={
            "mode": "embed",
            "model": EMBED_MODEL,
            "chunk_tokens": "30",
            "overlap_tokens": "0",
            "dimensions": "256",
        },
        files=[("files", ("log.txt", text.encode(), "text/plain"))],
    )
    assert r.status_code == 202, r.text
    calls_planned = r.json()["options"]["calls"]
    assert calls_planned == r.json()["options"]["chunks"] > 10  # Titan: one text a call
    batch = wait_batch(stack, r.json()["id"])
    assert batch["status"] == "completed" and batch["counts"]["succeeded"] == calls_planned

    jobs = stack.client.get("/v1/jobs", params={"batch_id": batch["id"], "limit": 200}).json()["data"]
    assert len(jobs) == calls_planned
    failed_over = 0
    for listed in jobs:
        job = stack.job(listed["id"])
        assert job["model"] == EMBED_MODEL and job["deployment"] == PROFILE
        assert {a["model"] for a in job["attempts"]} == {EMBED_MODEL}
        assert {a["deployment"] for a in job["attempts"]} <= {EAST, PROFILE}
        candidates = {c["deployment"] for c in job["explanation"]["candidates"]}
        assert candidates <= {EAST, PROFILE}
        if job["attempts"][0]["deployment"] == EAST:
            failed_over += 1
            assert any(a["error"] and a["error"]["type"].startswith("failover:") for a in job["attempts"])
    assert failed_over >= 1  # some chunks were first routed to the deployment in outage

    calls = [c for c in stack.emulator.calls() if c["kind"] == "embed"]
    assert {c["model"] for c in calls} == {EAST_ID, PROFILE_ID}
    assert {c["status"] for c in calls if c["model"] == EAST_ID} == {503}
    assert {c["status"] for c in calls if c["model"] == PROFILE_ID} == {200}

    rows = [
        json.loads(line)
        for line in stack.client.get(
            f"/v1/document_batches/{batch['id']}/results", params={"include_text": "true"}
        ).text.splitlines()
    ]
    assert len(rows) == calls_planned
    for row in rows:
        assert close(row["embedding"], emulator_vector(row["text"], 256))


def test_a_request_mixing_models_in_one_corpus_is_refused(routing_stack: RoutingStack) -> None:
    lines = [
        {"id": "a", "text": "first document", "model": EMBED_MODEL},
        {"id": "b", "text": "second document", "model": "text-embedding-3-small"},
    ]
    r = routing_stack.client.post(
        "/v1/document_batches",
        data={"mode": "embed", "model": EAST},  # a deployment: it names the model too
        files=[("jsonl", ("docs.jsonl", "\n".join(map(json.dumps, lines)).encode(), "application/x-ndjson"))],
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["code"] == "mixed_models"
    assert "one model" in error["message"] and "text-embedding-3-small" in error["message"]
    assert EMBED_MODEL in error["message"]
