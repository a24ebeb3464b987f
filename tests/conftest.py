"""Fixtures shared by every test: per-run isolation and the provider emulator over real HTTP.

`pytest_configure` gives this test run its own Postgres database name, Redis key prefix and
emulator port *before* any llmqueue module reads its settings, so parallel runs (and a
developer's own services) never share state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.server import EmulatorThread, free_port

RUN_ID = uuid.uuid4().hex[:10]
PG_ADMIN_URL = os.environ.get("LLMQUEUE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_DB = f"llmq_test_{RUN_ID}"
REDIS_URL = os.environ.get("LLMQUEUE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def pytest_configure(config: pytest.Config) -> None:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    port = free_port()
    os.environ.update(
        {
            "DATABASE_URL": f"{base}/{TEST_DB}",
            "REDIS_URL": REDIS_URL,
            "CELERY_BROKER_URL": REDIS_URL,
            "LLMQUEUE_REDIS_PREFIX": f"llmqtest:{RUN_ID}:",
            "LLMQUEUE_EMULATOR_URL": f"http://127.0.0.1:{port}",
            "LLMQUEUE_EMULATOR_MODE": "always",
            "LLMQUEUE_EMULATOR_PORT": str(port),
            "LLMQUEUE_PROVIDER_TIMEOUT_S": "10",
            "LLMQUEUE_VISIBILITY_TIMEOUT_S": "30",
            "LLMQUEUE_RETRY_BASE_S": "0.2",
            "LLMQUEUE_RETRY_MAX_S": "2",
            "LLMQUEUE_RETRIES_PER_DEPLOYMENT": "2",
            # Test webhooks and image servers listen on 127.0.0.1; every other internal address
            # stays refused (tests/integration/test_outbound.py uses 127.0.0.2 and others).
            "LLMQUEUE_OUTBOUND_ALLOWED_NETWORKS": "127.0.0.1/32",
            # Two pytest processes each run a stack of several processes (API, dispatcher,
            # workers, CLI calls) against one Postgres with max_connections 100: each process
            # warms and keeps a small pool, and overflows only under a burst.
            "LLMQUEUE_DB_POOL_SIZE": "3",
            "LLMQUEUE_DB_MAX_OVERFLOW": "12",
        }
    )
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "CO_API_KEY", "MISTRAL_API_KEY"):
        os.environ.pop(name, None)


class EmulatorHandle:
    """A running emulator plus helpers to configure faults for one test."""

    def __init__(self, thread: EmulatorThread) -> None:
        self.thread = thread
        self.url = thread.url

    def configure(self, scopes: dict[str, Any], seed: int = 0) -> None:
        r = httpx.post(f"{self.url}/_emulator/config", json={"scopes": scopes, "seed": seed})
        r.raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset").raise_for_status()

    def calls(self, **filters: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/_emulator/calls", params=filters)
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()
        return rows


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorThread]:
    with EmulatorThread(port=int(os.environ["LLMQUEUE_EMULATOR_PORT"])) as thread:
        yield thread


@pytest.fixture
def emulator(emulator_server: EmulatorThread) -> Iterator[EmulatorHandle]:
    handle = EmulatorHandle(emulator_server)
    handle.reset()
    yield handle
    handle.reset()
