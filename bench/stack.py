"""A whole llmqueue stack in subprocesses, for benchmarks: created, used, torn down.

`BenchStack` creates a Postgres database (migrated by Alembic) and a Redis key prefix of
its own, starts the provider emulator, the API and Celery workers as `llmqueue`
subprocesses with that environment, and creates an API key. On exit it stops every
process it started and drops the database and the prefix's keys. Jobs are submitted over
HTTP like any client; progress and attempt timings are read straight from Postgres.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
import psycopg
import redis
from celery import Celery

from emulator.server import free_port

PG_ADMIN_URL = os.environ.get("LLMQUEUE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LLMQUEUE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
OPEN = ("queued", "dispatched", "running")


@dataclass
class WorkerSpec:
    queues: str
    concurrency: int


@dataclass
class BenchStack:
    """Use as a context manager. `env` overrides settings for every process; `pg_admin_url`
    and `redis_url` name other servers than LLMQUEUE_BENCH_PG and LLMQUEUE_BENCH_REDIS."""

    workers: list[WorkerSpec]
    env: dict[str, str] = field(default_factory=dict)
    api_workers: int = 1  # uvicorn processes of the API (compose runs 2)
    pg_admin_url: str = PG_ADMIN_URL
    redis_url: str = REDIS_URL
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    key: str = ""

    @property
    def db_name(self) -> str:
        return f"llmq_bench_{self.run_id}"

    @property
    def db_url(self) -> str:
        return f"{self.pg_admin_url.rsplit('/', 1)[0]}/{self.db_name}"

    def __enter__(self) -> BenchStack:
        self.api_port, self.emulator_port = free_port(), free_port()
        self.prefix = f"llmqbench:{self.run_id}:"
        self.full_env = {
            **os.environ,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "CELERY_BROKER_URL": self.redis_url,
            "LLMQUEUE_REDIS_PREFIX": self.prefix,
            "LLMQUEUE_EMULATOR_URL": self.emulator_url,
            "LLMQUEUE_EMULATOR_MODE": "always",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        self._cli("migrate")
        self._spawn("emulator", "--port", str(self.emulator_port))
        self._spawn("api", "--port", str(self.api_port), "--workers", str(self.api_workers))
        names = []
        for spec in self.workers:
            names.append(f"bench{len(self.procs)}-{self.run_id}@{socket.gethostname()}")
            self._spawn("worker", "-Q", spec.queues, "-c", str(spec.concurrency), "--name", names[-1])
        self._wait_http(f"{self.emulator_url}/_emulator/health")
        self._wait_http(f"{self.api_url}/healthz")
        self._wait_workers(names)
        self.key = self._cli("keys", "create", "--name", "bench")
        # One connection for all progress queries: Postgres's connection slots are shared.
        self.conn = psycopg.connect(self.db_url, autocommit=True)
        self.client = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=60,
            limits=httpx.Limits(max_connections=64),
        )

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if getattr(self, "conn", None) is not None:
            self.conn.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        client = redis.Redis.from_url(self.redis_url)
        for key in client.scan_iter(match=self.prefix + "*", count=1000):
            client.delete(key)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    def _cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "llmqueue.cli", *args],
            env=self.full_env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def _spawn(self, *args: str) -> None:
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "llmqueue.cli", *args],
                env=self.full_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def _wait_workers(self, names: list[str], timeout: float = 120) -> None:
        """A worker answers a ping only once its warm-up (SDK clients, tokenizer) is done:
        a run started before that would measure the cold start, not the pipeline."""
        control = Celery(broker=self.redis_url)
        control.conf.broker_transport_options = {"global_keyprefix": self.prefix}
        waiting = set(names)
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {timeout:.0f} s: {sorted(waiting)}")
            for reply in control.control.ping(destination=sorted(waiting), timeout=0.5):
                waiting -= set(reply)

    @staticmethod
    def _wait_http(url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not come up")

    def configure_emulator(self, scopes: dict[str, Any]) -> None:
        httpx.post(f"{self.emulator_url}/_emulator/config", json={"scopes": scopes}).raise_for_status()

    def submit_all(
        self, bodies: list[dict[str, Any]], threads: int = 8, rate: float | None = None
    ) -> list[str]:
        """Submit every body over HTTP, at `rate` jobs/s when given (else as fast as it goes);
        returns the job ids in order."""
        start = time.monotonic()

        def one(indexed: tuple[int, dict[str, Any]]) -> str:
            i, body = indexed
            if rate:
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
            r = self.client.post("/v1/jobs", json=body)
            r.raise_for_status()
            job_id: str = r.json()["id"]
            return job_id

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, enumerate(bodies)))

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    def wait_until_done(self, ids: list[str], timeout: float = 900) -> dict[str, int]:
        """Poll Postgres until none of `ids` is open; returns the final count by status."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sql("SELECT status, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY status", ids)
            counts = {str(s): int(n) for s, n in rows}
            if not any(counts.get(s) for s in OPEN):
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still open after {timeout}s: {counts}")
            time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]
