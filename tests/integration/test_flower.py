"""Flower as docker-compose runs it: basic auth from FLOWER_BASIC_AUTH guards the pages and
the HTTP API alike (no FLOWER_UNAUTHENTICATED_API needed), and workers started without
`--name` show up under their queues' names."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from emulator.server import free_port
from tests.integration.conftest import WorkerProcess

USER, PASSWORD = "ops", "flower-test-password"


@pytest.fixture
def flower(database: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
    env.pop("FLOWER_UNAUTHENTICATED_API", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "--app", "workers.celery_app:app", "flower", f"--port={port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(15)


def test_flower_api_answers_with_basic_auth_and_lists_workers_by_queue(flower: str) -> None:
    named_after_queue = WorkerProcess(queues="provider.compatible", concurrency=2, default_name=True).start()
    try:
        assert httpx.get(f"{flower}/api/workers").status_code == 401
        assert httpx.get(f"{flower}/", auth=(USER, "wrong")).status_code == 401
        wanted = f"compatible@{socket.gethostname()}"
        deadline = time.monotonic() + 30
        workers: dict[str, object] = {}
        while wanted not in workers and time.monotonic() < deadline:
            answer = httpx.get(
                f"{flower}/api/workers", params={"refresh": 1}, auth=(USER, PASSWORD), timeout=20
            )
            assert answer.status_code == 200, answer.text
            workers = answer.json()
            time.sleep(0.5)
        assert wanted in workers, sorted(workers)
        assert httpx.get(f"{flower}/", auth=(USER, PASSWORD)).status_code == 200
    finally:
        named_after_queue.stop()
