"""Postgres stopped for ten seconds while a client submits jobs at a steady rate: every request
gets an answer, each a 2xx or a JSON 503 with Retry-After (never a plain-text 500, never a
dropped connection); submissions succeed again once it is back, with the same API process;
and every job answered 202 is in the database and runs.

A private Postgres server (its own data directory and port) is stopped and started; the API
and the worker are their own processes on it, with their own Redis prefix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import redis

from emulator.server import free_port
from tests.integration.conftest import WorkerProcess
from tests.integration.private_pg import PrivatePostgres, postgres_bin

pytestmark = pytest.mark.skipif(postgres_bin() is None, reason="no Postgres server binaries")

RATE_PER_S = 20
BEFORE_S, DOWN_S, AFTER_S = 2.0, 10.0, 8.0


@dataclass
class Answer:
    sent_at: float
    status: int | None = None
    content_type: str = ""
    body: Any = None
    retry_after: str | None = None
    failure: str | None = None  # no answer at all: the connection dropped or timed out


@pytest.fixture
def private_stack(emulator_server: Any) -> Iterator[tuple[PrivatePostgres, dict[str, str], str, str]]:
    pg = PrivatePostgres().init()
    prefix = f"{os.environ['LLMQUEUE_REDIS_PREFIX']}pgdown-{uuid.uuid4().hex[:6]}:"
    env = {**os.environ, "DATABASE_URL": pg.url, "LLMQUEUE_REDIS_PREFIX": prefix}
    api: subprocess.Popen[str] | None = None
    try:
        cli = [sys.executable, "-m", "llmqueue.cli"]
        subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, timeout=120)
        made = subprocess.run(
            [*cli, "keys", "create", "--name", "outage"], env=env, check=True, capture_output=True, text=True
        )
        key = made.stdout.strip()
        port = free_port()
        api = subprocess.Popen([*cli, "api", "--port", str(port)], env=env, text=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("the API on the private database did not start")
        yield pg, env, url, key
    finally:
        if api is not None:
            api.terminate()
            api.wait(15)
        pg.remove()
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        for name in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(name)


def _submit(client: httpx.Client, n: int, sent_at: float) -> Answer:
    answer = Answer(sent_at)
    try:
        r = client.post(
            "/v1/jobs",
            json={"messages": [{"role": "user", "content": f"Say hello {n}"}], "model": "gpt-4o-mini"},
        )
    except httpx.HTTPError as exc:
        answer.failure = f"{type(exc).__name__}: {exc}"
        return answer
    answer.status = r.status_code
    answer.content_type = r.headers.get("content-type", "")
    answer.retry_after = r.headers.get("retry-after")
    try:
        answer.body = r.json()
    except ValueError:
        answer.body = r.text
    return answer


def test_postgres_stopped_for_ten_seconds_every_request_is_answered(
    private_stack: tuple[PrivatePostgres, dict[str, str], str, str],
) -> None:
    pg, env, url, key = private_stack
    client = httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )
    futures: list[Future[Answer]] = []
    stop_sending = threading.Event()

    def send_steadily(pool: ThreadPoolExecutor) -> None:
        start = time.monotonic()
        n = 0
        while not stop_sending.is_set():
            due = start + n / RATE_PER_S
            time.sleep(max(0.0, due - time.monotonic()))
            futures.append(pool.submit(_submit, client, n, time.monotonic() - start))
            n += 1

    health: list[tuple[float, int]] = []  # (monotonic, /healthz status) every quarter second

    def watch_health() -> None:
        with httpx.Client(base_url=url, timeout=10) as watcher:
            while not stop_sending.is_set():
                try:
                    health.append((time.monotonic(), watcher.get("/healthz").status_code))
                except httpx.HTTPError:
                    health.append((time.monotonic(), 0))
                time.sleep(0.25)

    with ThreadPoolExecutor(max_workers=100) as pool:
        sender = threading.Thread(target=send_steadily, args=(pool,), daemon=True)
        sender.start()
        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()
        time.sleep(BEFORE_S)
        pg.stop()
        stopped_at = time.monotonic()
        time.sleep(DOWN_S)
        pg.start()
        back_for = DOWN_S + (time.monotonic() - stopped_at - DOWN_S)
        time.sleep(AFTER_S)
        stop_sending.set()
        sender.join(5)
        watcher.join(15)
        answers = [f.result() for f in futures]
    client.close()

    dropped = [a for a in answers if a.failure is not None]
    assert not dropped, f"{len(dropped)} requests got no answer: {dropped[:3]}"
    for a in answers:
        assert a.status is not None and (200 <= a.status < 300 or a.status == 503), (a.status, a.body)
        assert a.content_type.startswith("application/json"), (a.status, a.content_type, a.body)
        if a.status == 503:
            assert a.retry_after is not None and int(a.retry_after) > 0
            assert a.body["error"]["code"] in ("database_unavailable", "redis_unavailable"), a.body
            assert a.body["error"]["type"] == "service_unavailable"
    # /healthz answers from a check at most two seconds old: it says 503 soon after Postgres
    # stops, and 200 again once it is back.
    assert all(status in (200, 503) for _, status in health), health
    down = [t - stopped_at for t, status in health if status == 503]
    assert down and down[0] < 5, f"/healthz said 503 first {down[:1]} s after Postgres stopped"
    assert health[-1][1] == 200, "/healthz says 200 again once Postgres is back"

    unavailable = [a for a in answers if a.status == 503]
    accepted = [a for a in answers if a.status == 202]
    print(
        f"\n{len(answers)} requests: {len(accepted)} accepted (202), {len(unavailable)} JSON 503 "
        f"with Retry-After, {len(dropped)} without an answer"
    )
    assert len(unavailable) >= RATE_PER_S * DOWN_S / 2, "Postgres was down for ten seconds"
    after = [a for a in accepted if a.sent_at > BEFORE_S + back_for + 3]
    assert after, "submissions succeed again once Postgres is back, with the same API process"
    assert len(answers) >= RATE_PER_S * (BEFORE_S + DOWN_S + AFTER_S) * 0.8

    # Nothing answered 202 is lost: each job is stored, and a worker runs every one of them.
    ids = [a.body["id"] for a in accepted]
    worker = WorkerProcess(queues="all", env=env).start()
    try:
        deadline = time.monotonic() + 120
        while True:
            with psycopg.connect(pg.url) as conn:
                rows = dict(conn.execute("SELECT id, status FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall())
            if all(rows.get(i) == "succeeded" for i in ids) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        worker.stop()
    assert set(rows) == set(ids), f"{len(set(ids) - set(rows))} accepted jobs are missing"
    assert all(rows[i] == "succeeded" for i in ids), {
        s: list(rows.values()).count(s) for s in set(rows.values())
    }
