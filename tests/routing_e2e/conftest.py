"""A dedicated real stack for routing tests that need their own settings.

Failover and round robin need what the session stack cannot give without changing it for
everyone: a test catalog (the default plus model `rr-mini` with three deployments, priced
and scored so that no automatic strategy ever picks it, and an embedding model with two
deployments the emulator tells apart), a one-second breaker cooldown, a
three-second traffic ramp after a recovery, and two dispatcher processes. So this stack has
its own Postgres database (migrated by Alembic), its own Redis prefix (hence its own Celery
queues), the API as a `llmqueue api` subprocess, and Celery workers as `llmqueue worker`
subprocesses. It shares the session's emulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from emulator.server import free_port
from routing.catalog import DEFAULT_CATALOG_PATH
from tests.conftest import PG_ADMIN_URL, RUN_ID, TEST_DB, EmulatorHandle
from tests.integration.conftest import Stack, WorkerProcess
from workers.queues import ALL_PROVIDER_QUEUES

RR_DEPLOYMENTS = ("rr/a", "rr/b", "rr/c")
BREAKER_COOLDOWN_S = 1.0
BREAKER_RAMP_S = 3.0

RR_CATALOG = """
[[models]]
id = "rr-mini"
provider = "openai"
context_window = 128000
max_output_tokens = 4096
input_price = "50"
output_price = "50"
capabilities = ["streaming"]
quality = 1
latency_ms = 9000
tags = ["test"]
""" + "".join(
    f'\n[[deployments]]\nname = "{name}"\nmodel = "rr-mini"\nprovider_model = "gpt-4o-mini"\n'
    for name in RR_DEPLOYMENTS
)


# Issue 14: an embedding model with two deployments the emulator tells apart (a cross-region
# inference profile's id is a scope of its own there), so an outage can hit one of them only:
# embedding jobs must fail over to the other, never to another model.
EMBED_MODEL = "titan-embed-e2e"
EMBED_DEPLOYMENTS = {
    "titan-e2e/us-east-1": "amazon.titan-embed-text-v2:0",
    "titan-e2e/us-profile": "us.amazon.titan-embed-text-v2:0",
}
EMBED_CATALOG = f"""
[[models]]
id = "{EMBED_MODEL}"
provider = "bedrock"
kind = "embedding"
dimensions = 1024
dimension_options = [256, 512]
max_input_tokens = 8192
max_inputs_per_call = 1
input_price = "0.02"
quality = 58
""" + "".join(
    f'\n[[deployments]]\nname = "{name}"\nmodel = "{EMBED_MODEL}"\nregion = "us-east-1"\n'
    f'provider_model = "{provider_model}"\n'
    for name, provider_model in EMBED_DEPLOYMENTS.items()
)


class ApiProcess:
    """`llmqueue api` in a child process with this stack's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmqueue.cli", "api", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30) -> ApiProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


class RoutingStack(Stack):
    """The Stack helpers plus this stack's dispatcher processes and health endpoint."""

    dispatchers: list[WorkerProcess]

    def deployment_health(self, name: str) -> dict[str, Any]:
        for provider in self.client.get("/v1/providers").json()["data"]:
            for dep in provider["deployments"]:
                if dep["deployment"] == name:
                    found: dict[str, Any] = dep
                    return found
        raise KeyError(name)


def _run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "llmqueue.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"llmqueue {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


@pytest.fixture(scope="session")
def routing_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for every process of this stack: own database, prefix and catalog."""
    catalog = Path(tmp_path_factory.mktemp("routing")) / "catalog.toml"
    catalog.write_text(DEFAULT_CATALOG_PATH.read_text() + RR_CATALOG + EMBED_CATALOG)
    db = f"{TEST_DB}_routing"
    prefix = f"llmqtest:{RUN_ID}:routing:"
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{db}",
        "LLMQUEUE_REDIS_PREFIX": prefix,
        "LLMQUEUE_CATALOG": str(catalog),
        "LLMQUEUE_BREAKER_COOLDOWN_S": str(BREAKER_COOLDOWN_S),
        "LLMQUEUE_BREAKER_RAMP_S": str(BREAKER_RAMP_S),
    }
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        _run(env, "migrate")
        yield env
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        client = redis.Redis.from_url(env["REDIS_URL"])
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)


@pytest.fixture(scope="session")
def routing_processes(
    routing_env: dict[str, str], emulator_server: Any
) -> Iterator[tuple[ApiProcess, list[WorkerProcess]]]:
    api = ApiProcess(routing_env)
    dispatchers = [WorkerProcess(queues="dispatch", concurrency=8, env=routing_env) for _ in range(2)]
    callers = WorkerProcess(queues=",".join(ALL_PROVIDER_QUEUES), concurrency=100, env=routing_env)
    started: list[WorkerProcess] = []
    try:
        api.wait_ready()
        for proc in (*dispatchers, callers):
            started.append(proc.start())
        yield api, dispatchers
    finally:
        for proc in started:
            proc.stop()
        api.stop()


@pytest.fixture
def routing_stack(
    routing_env: dict[str, str],
    routing_processes: tuple[ApiProcess, list[WorkerProcess]],
    emulator: EmulatorHandle,
) -> RoutingStack:
    api, dispatchers = routing_processes
    stack = RoutingStack(
        api.url, _run(routing_env, "keys", "create", "--name", "routing-e2e", "--admin"), emulator
    )
    stack.dispatchers = dispatchers
    return stack
