"""The real stack for integration tests: a fresh Postgres database migrated by Alembic,
Redis, the API served by uvicorn over HTTP, and Celery workers in their own processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import redis
import uvicorn

from emulator.server import free_port
from tests.conftest import PG_ADMIN_URL, TEST_DB, EmulatorHandle
from tests.integration.console_support import browser, page  # noqa: F401  (the console's browser tests)
from workers.queues import ALL_QUEUES

ENDED = ("succeeded", "failed", "cancelled")
CRASH_TEST_QUEUE = "provider.azure"
# Queues the shared worker leaves to the workers a test starts (and may kill) itself: the crash
# test's provider queue, and the provider-batch queue (tests/integration/test_provider_batches.py).
OWN_WORKER_QUEUES = (CRASH_TEST_QUEUE, "provider_batch")


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEST_DB}"')
    from jobstore.migrate import upgrade

    upgrade()
    yield os.environ["DATABASE_URL"]
    from jobstore.db import get_engine

    get_engine().dispose()
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_clean() -> Iterator[None]:
    yield
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for key in client.scan_iter(match=os.environ["LLMQUEUE_REDIS_PREFIX"] + "*", count=1000):
        client.delete(key)


class WorkerProcess:
    """`llmqueue worker` in a child process: a real Celery worker on the real broker."""

    def __init__(
        self,
        queues: str = "all",
        concurrency: int = 50,
        env: dict[str, str] | None = None,
        *,
        default_name: bool = False,  # let `llmqueue worker` name itself after its queues
    ) -> None:
        self.queues = queues
        self.default_name = default_name
        self.concurrency = concurrency
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start(self, timeout: float = 90) -> WorkerProcess:  # a loaded CI box is slow to import
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmqueue.cli",
                "worker",
                "-Q",
                self.queues,
                "-c",
                str(self.concurrency),
                "--loglevel",
                "INFO",
                *([] if self.default_name else ["--name", f"w{time.monotonic_ns()}@%h"]),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                if " ready." in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("worker did not become ready:\n" + "".join(self.log[-40:]))
        return self

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['LLMQUEUE_METRICS_PORT']}/metrics"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class ApiServer:
    def __init__(self) -> None:
        from api.main import create_app

        self.port = free_port()
        config = uvicorn.Config(
            create_app(), host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class Stack:
    api_url: str
    key: str
    emulator: EmulatorHandle
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.api_url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def submit(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.client.post("/v1/jobs", json=body, headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in ENDED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            time.sleep(0.1)


def make_key(name: str = "test", *, admin: bool = False) -> str:
    from jobstore.db import transaction
    from jobstore.jobs import create_api_key
    from jobstore.models import KeyRole

    with transaction() as session:
        _, secret = create_api_key(session, name, role=KeyRole.ADMIN if admin else KeyRole.MEMBER)
    return secret


@pytest.fixture(scope="session")
def api_server(database: str, redis_clean: None) -> Iterator[ApiServer]:
    server = ApiServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def worker(database: str, redis_clean: None, emulator_server: Any) -> Iterator[WorkerProcess]:
    # provider.azure and provider_batch are left to the workers a test starts itself.
    queues = ",".join(q for q in ALL_QUEUES if q not in OWN_WORKER_QUEUES)
    # It serves its Prometheus metrics too (tests/integration/test_metrics.py reads them).
    proc = WorkerProcess(queues=queues, env={"LLMQUEUE_METRICS_PORT": str(free_port())}).start()
    yield proc
    proc.stop()


def wait_until_quiet(timeout: float = 60) -> None:
    """Wait until no provider call is in flight and no queue the shared worker serves holds a
    message: a call a test left running (a cancelled batch's, a probe's) would otherwise reach
    the emulator during the next test and show up in its call log."""
    from sqlalchemy import func, select

    from jobstore.db import transaction
    from jobstore.models import Attempt, AttemptStatus
    from workers.sweeper import idle_broker_queues

    served = {q for q in ALL_QUEUES if q not in OWN_WORKER_QUEUES}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with transaction() as session:
            running = session.scalar(
                select(func.count()).select_from(Attempt).where(Attempt.status == AttemptStatus.RUNNING)
            )
        if not running and served <= idle_broker_queues():
            return
        time.sleep(0.2)
    warnings.warn(f"the stack was still busy {timeout:.0f} s after the test", stacklevel=2)


@pytest.fixture
def stack(api_server: ApiServer, worker: WorkerProcess, emulator: EmulatorHandle) -> Iterator[Stack]:
    # Each test starts with every deployment healthy: breakers earlier tests tripped are reset.
    from workers.health import HealthStore

    HealthStore(
        redis.Redis.from_url(os.environ["REDIS_URL"]), prefix=os.environ["LLMQUEUE_REDIS_PREFIX"]
    ).reset()
    yield Stack(api_server.url, make_key(), emulator)
    wait_until_quiet()


@pytest.fixture
def admin_stack(stack: Stack) -> Stack:
    """The same stack seen through a new admin key (key management, full provider health, the
    provider test)."""
    return Stack(stack.api_url, make_key("admin", admin=True), stack.emulator)
