"""A revoked key gets 401 from every API process within 5 s: the stack's API and a second one,
`llmqueue api` in its own process, both with the key in their caches when it is revoked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from emulator.server import free_port
from tests.integration.conftest import Stack

PROMISED_S = 5.0


@pytest.fixture
def second_api(stack: Stack) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmqueue.cli", "api", "--port", str(port)],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the second API did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_a_revoked_key_gets_401_from_both_api_processes_within_5_s(
    admin_stack: Stack, second_api: str
) -> None:
    secret = admin_stack.client.post("/v1/keys", json={"name": "to-revoke"}).json()["secret"]
    bystander = admin_stack.client.post("/v1/keys", json={"name": "stays"}).json()["secret"]
    apis = {"stack": admin_stack.api_url, "second": second_api}
    clients = {name: httpx.Client(base_url=url, timeout=10) for name, url in apis.items()}

    def status(name: str, key: str) -> int:
        return clients[name].get("/v1/jobs?limit=1", headers={"Authorization": f"Bearer {key}"}).status_code

    # Both processes have the key cached as valid when it is revoked.
    for name in apis:
        assert status(name, secret) == 200 and status(name, bystander) == 200
    key_id = httpx.get(f"{second_api}/v1/keys/self", headers={"Authorization": f"Bearer {secret}"}).json()[
        "id"
    ]
    revoked = admin_stack.client.post(f"/v1/keys/{key_id}/revoke")
    start = time.monotonic()
    assert revoked.status_code == 200

    refused_after: dict[str, float] = {}
    while len(refused_after) < len(apis) and time.monotonic() - start < PROMISED_S + 5:
        for name in apis:
            if name not in refused_after and status(name, secret) == 401:
                refused_after[name] = time.monotonic() - start
        time.sleep(0.05)
    assert set(refused_after) == set(apis), f"still accepted after {PROMISED_S + 5} s: {refused_after}"
    assert max(refused_after.values()) < PROMISED_S, refused_after

    for name in apis:  # and it stays refused, with the one error shape; other keys are untouched
        r = clients[name].get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert status(name, bystander) == 200
