"""The chaos suite: the real stack, broken on purpose, and what it lost.

`make chaos` (`python -m bench.chaos`) starts a private Postgres and a private Redis (never the
machine's shared ones), the provider emulator (300 ms a call), the API, two dispatchers and two
provider workers, and for each case submits a batch of documents, breaks something part-way,
and waits for the batch to end:

- `worker-kill`: kill -9 of a provider worker mid-batch (its calls in flight are taken over
  once their leases run out);
- `dispatcher-kill`: kill -9 of a dispatcher mid-batch;
- `redis-restart`: Redis killed and started again empty (every queue and lock lost);
- `postgres-stop`: Postgres stopped for 10 s while clients submit jobs one by one.

Reported for each: jobs lost (accepted, never ended), calls made twice (prompts the emulator
answered more than once), costs recorded twice (jobs with more than one succeeded attempt, or
whose cost is not their attempts'), time to recover, and whether every process still runs.
`--quick` runs smaller batches; `make chaos-test` runs the worker kill as a test (tests/chaos).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.private_services import PrivatePostgres, PrivateRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
PROMPT = "Summarise in one line: {document}"


@dataclass
class Outcome:
    case: str
    jobs: int
    lost: int
    called_twice: int
    cost_twice: int
    recovery_s: float | None
    all_alive: bool
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        recovered = self.recovery_s is not None and self.recovery_s < 30
        # A kill may make the calls in flight again (their answers were never recorded), no more.
        twice_ok = self.called_twice <= self.notes.get("calls_in_flight_at_kill", 0)
        answers_ok = self.notes.get("every_answer_json_2xx_or_503", True)
        return (
            self.lost == 0
            and self.cost_twice == 0
            and self.all_alive
            and recovered
            and twice_ok
            and answers_ok
        )


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "llmqueue.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()


class ChaosStack:
    """Private Postgres and Redis, the emulator, the API, two dispatchers, two provider workers."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.redis = PrivateRedis()
        self.postgres = PrivatePostgres()
        self.api_port = free_port()
        self.emulator_port = free_port()
        self.procs: dict[str, Proc] = {}
        self.key = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.redis.url,
            "LLMQUEUE_REDIS_PREFIX": "chaos:",
            "LLMQUEUE_EMULATOR_URL": f"http://127.0.0.1:{self.emulator_port}",
            "LLMQUEUE_EMULATOR_MODE": "always",
            "LLMQUEUE_PROVIDER_TIMEOUT_S": "30",
            "LLMQUEUE_VISIBILITY_TIMEOUT_S": "120",
            "LLMQUEUE_DB_POOL_SIZE": "5",
        }

    def start(self) -> ChaosStack:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.postgres.init()
        subprocess.run(
            [sys.executable, "-m", "llmqueue.cli", "migrate"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        self.key = subprocess.run(
            [sys.executable, "-m", "llmqueue.cli", "keys", "create", "--name", "chaos"],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        self.spawn("emulator", ["emulator", "--port", str(self.emulator_port)])
        self.spawn("api", ["api", "--port", str(self.api_port)])
        for i in (0, 1):
            self.spawn(
                f"dispatcher{i}",
                ["worker", "-Q", "dispatch", "-c", "8", "--name", f"dispatch{i}@%h", "--loglevel", "INFO"],
            )
            self.spawn(
                f"provider{i}",
                [
                    "worker",
                    "-Q",
                    "provider.openai",
                    "-c",
                    "200",
                    "--name",
                    f"openai{i}@%h",
                    "--loglevel",
                    "INFO",
                ],
            )
        self._wait_http(f"http://127.0.0.1:{self.emulator_port}/_emulator/health")
        self._wait_http(f"http://127.0.0.1:{self.api_port}/healthz")
        self.emulator({"scopes": {"*": {"latency_ms": 300, "rate_limit_headers": False}}})
        self._wait_logs(" ready.", [n for n in self.procs if n.startswith(("dispatcher", "provider"))])
        return self

    def spawn(self, name: str, args: list[str]) -> Proc:
        proc = Proc(name, args, self.env, self.logs)
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.redis.stop()
        self.postgres.remove()

    def _wait_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer")

    def _wait_logs(self, marker: str, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(marker in self.procs[n].log.read_text(errors="replace") for n in names):
                return
            time.sleep(0.3)
        raise RuntimeError(f"not ready: {names}")

    # ------------------------------------------------------------ talking to it

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def emulator(self, config: dict[str, Any]) -> None:
        url = f"http://127.0.0.1:{self.emulator_port}"
        httpx.post(f"{url}/_emulator/reset", timeout=10).raise_for_status()
        httpx.post(f"{url}/_emulator/config", json=config, timeout=10).raise_for_status()

    def answered_twice(self) -> int:
        report = httpx.get(f"http://127.0.0.1:{self.emulator_port}/_emulator/answered", timeout=30).json()
        return len(report["repeated"])

    def submit_batch(self, documents: int, tag: str) -> str:
        lines = "".join(
            json.dumps(
                {"id": f"{tag}-{i}", "text": f"{tag} document {i}: the river keeper's notes, page {i}."}
            )
            + "\n"
            for i in range(documents)
        )
        r = httpx.post(
            f"{self.api}/v1/document_batches",
            headers={"Authorization": f"Bearer {self.key}"},
            data={"prompt": PROMPT, "model": MODEL, "max_tokens": "40"},
            files={"jsonl": ("docs.jsonl", lines.encode(), "application/jsonl")},
            timeout=300,
        )
        r.raise_for_status()
        batch_id: str = r.json()["id"]
        return batch_id

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.postgres.url, connect_timeout=5) as conn:
            return conn.execute(query, params).fetchall()

    def batch_counts(self, batch_id: str) -> Counter[str]:
        rows = self.sql("SELECT status, count(*) FROM jobs WHERE batch_id = %s GROUP BY status", batch_id)
        return Counter({status: n for status, n in rows})

    def wait_batch(self, batch_id: str, total: int, timeout: float) -> float:
        """Seconds until every job of the batch ended (raises after `timeout`)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                counts = self.batch_counts(batch_id)
            except psycopg.Error:
                counts = Counter()
            if sum(counts[s] for s in ("succeeded", "failed", "cancelled")) >= total:
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(
            f"batch {batch_id} not done after {timeout:.0f} s: {dict(self.batch_counts(batch_id))}"
        )

    def wait_progress(self, batch_id: str, share: float, total: int) -> None:
        while True:
            counts = self.batch_counts(batch_id)
            if counts["succeeded"] >= share * total:
                return
            time.sleep(0.2)

    def tally(self, batch_id: str, total: int, case: str) -> Outcome:
        ended = self.sql(
            "SELECT count(*) FROM jobs WHERE batch_id = %s AND status IN ('succeeded','failed','cancelled')",
            batch_id,
        )[0][0]
        twice = self.sql(
            "SELECT count(*) FROM (SELECT j.id FROM jobs j JOIN attempts a ON a.job_id = j.id "
            "WHERE j.batch_id = %s AND a.status = 'succeeded' GROUP BY j.id, j.cost_usd "
            "HAVING count(*) > 1 OR sum(a.cost_usd) <> j.cost_usd) AS t",
            batch_id,
        )[0][0]
        return Outcome(
            case=case,
            jobs=total,
            lost=total - ended,
            called_twice=self.answered_twice(),
            cost_twice=twice,
            recovery_s=None,
            all_alive=all(p.alive for p in self.procs.values()),
        )


# ---------------------------------------------------------------- the cases


def worker_kill(stack: ChaosStack, documents: int) -> Outcome:
    stack.emulator({"scopes": {"*": {"latency_ms": 300, "rate_limit_headers": False}}})
    batch = stack.submit_batch(documents, "wk")
    stack.wait_progress(batch, 0.3, documents)
    victim = stack.procs["provider0"]
    prefix = f"{victim.popen.pid}-%"
    victim.kill9()
    killed_at = time.monotonic()
    held = {
        row[0]
        for row in stack.sql("SELECT id FROM attempts WHERE status='running' AND claim_token LIKE %s", prefix)
    }
    recovery = None
    while held:
        left = stack.sql(
            "SELECT count(*) FROM attempts WHERE id = ANY(%s) AND status='running' AND claim_token LIKE %s",
            list(held),
            prefix,
        )[0][0]
        if left == 0:
            recovery = time.monotonic() - killed_at
            break
        if time.monotonic() - killed_at > 120:
            break
        time.sleep(0.25)
    if not held:
        recovery = 0.0
    stack.wait_batch(batch, documents, timeout=900)
    outcome = stack.tally(batch, documents, "worker-kill")
    outcome.recovery_s = recovery
    outcome.notes = {"calls_in_flight_at_kill": len(held)}
    outcome.all_alive = all(p.alive for n, p in stack.procs.items() if n != "provider0")
    stack.spawn("provider0", ["worker", "-Q", "provider.openai", "-c", "200", "--name", "openai0b@%h"])
    return outcome


def dispatcher_kill(stack: ChaosStack, documents: int) -> Outcome:
    stack.emulator({"scopes": {"*": {"latency_ms": 300, "rate_limit_headers": False}}})
    batch = stack.submit_batch(documents, "dk")
    stack.wait_progress(batch, 0.3, documents)
    victim = stack.procs["dispatcher0"]
    victim.kill9()
    killed_at = time.monotonic()
    released = {
        row[0]
        for row in stack.sql(
            "SELECT id FROM jobs WHERE batch_id = %s AND status = 'queued' AND not_before IS NULL", batch
        )
    }
    recovery = 0.0 if not released else None
    while released and time.monotonic() - killed_at < 120:
        left = stack.sql(
            "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = 'queued'", list(released)
        )[0][0]
        if left == 0:
            recovery = time.monotonic() - killed_at
            break
        time.sleep(0.25)
    stack.wait_batch(batch, documents, timeout=900)
    outcome = stack.tally(batch, documents, "dispatcher-kill")
    outcome.recovery_s = recovery
    outcome.notes = {"released_undispatched_at_kill": len(released)}
    outcome.all_alive = all(p.alive for n, p in stack.procs.items() if n != "dispatcher0")
    stack.spawn("dispatcher0", ["worker", "-Q", "dispatch", "-c", "8", "--name", "dispatch0b@%h"])
    return outcome


def redis_restart(stack: ChaosStack, documents: int) -> Outcome:
    stack.emulator({"scopes": {"*": {"latency_ms": 300, "rate_limit_headers": False}}})
    batch = stack.submit_batch(documents, "rr")
    stack.wait_progress(batch, 0.3, documents)
    open_jobs = {
        row[0]
        for row in stack.sql(
            "SELECT id FROM jobs WHERE batch_id = %s AND status IN ('queued','dispatched','running')", batch
        )
    }
    stack.redis.kill()
    time.sleep(3)
    stack.redis.start()  # the same port, empty
    back = time.monotonic()
    back_wall = time.time()
    recovery = None
    while time.monotonic() - back < 300:
        moving = stack.sql(
            "SELECT count(DISTINCT j.id) FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id "
            "WHERE j.id = ANY(%s) AND (j.status IN ('succeeded','failed','cancelled') "
            "OR a.started_at > to_timestamp(%s) OR (j.not_before IS NOT NULL AND j.status = 'queued'))",
            list(open_jobs),
            back_wall,
        )[0][0]
        if moving >= len(open_jobs):
            recovery = time.monotonic() - back
            break
        time.sleep(0.5)
    stack.wait_batch(batch, documents, timeout=900)
    outcome = stack.tally(batch, documents, "redis-restart")
    outcome.recovery_s = recovery
    outcome.notes = {"open_at_loss": len(open_jobs)}
    return outcome


def postgres_stop(stack: ChaosStack, seconds: float, rate: float = 20.0) -> Outcome:
    """Clients submit single jobs at `rate`/s; Postgres stops for `seconds` in the middle."""
    stack.emulator({"scopes": {"*": {"latency_ms": 300, "rate_limit_headers": False}}})
    answers: Counter[str] = Counter()
    accepted: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(
            base_url=stack.api, headers={"Authorization": f"Bearer {stack.key}"}, timeout=30
        ) as http:
            i = 0
            while not stop.is_set():
                i += 1
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"pg stop {i}"}],
                    "max_tokens": 20,
                }
                try:
                    r = http.post("/v1/jobs", json=body)
                except httpx.HTTPError as exc:
                    answers[f"dropped ({type(exc).__name__})"] += 1
                else:
                    json_body = r.headers.get("content-type", "").startswith("application/json")
                    kind = f"{r.status_code}{'' if json_body else ' (not JSON)'}"
                    if r.status_code == 503 and "retry-after" not in {k.lower() for k in r.headers}:
                        kind += " (no Retry-After)"
                    answers[kind] += 1
                    if r.status_code == 202:
                        accepted.append(r.json()["id"])
                time.sleep(1 / rate)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    time.sleep(5)
    stack.postgres.stop("immediate")
    time.sleep(seconds)
    stack.postgres.start()
    back = time.monotonic()
    time.sleep(5)
    stop.set()
    thread.join(30)
    recovery = None
    while time.monotonic() - back < 300:
        try:
            done = stack.sql(
                "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status IN "
                "('succeeded','failed','cancelled')",
                accepted,
            )[0][0]
        except psycopg.Error:
            done = -1
        if done == len(accepted):
            recovery = time.monotonic() - back
            break
        time.sleep(0.5)
    found = stack.sql("SELECT count(*) FROM jobs WHERE id = ANY(%s)", accepted)[0][0]
    ok_shapes = all(k in ("202", "503") for k in answers)
    return Outcome(
        case="postgres-stop",
        jobs=len(accepted),
        lost=len(accepted) - found,
        called_twice=stack.answered_twice(),
        cost_twice=0,
        recovery_s=recovery,
        all_alive=all(p.alive for p in stack.procs.values()),
        notes={"answers": dict(answers), "every_answer_json_2xx_or_503": ok_shapes},
    )


CASES: dict[str, Callable[[ChaosStack, int], Outcome]] = {
    "worker-kill": worker_kill,
    "dispatcher-kill": dispatcher_kill,
    "redis-restart": redis_restart,
    "postgres-stop": lambda stack, _: postgres_stop(stack, 10.0),
}


@contextmanager
def chaos_stack(logs: Path) -> Iterator[ChaosStack]:
    stack = ChaosStack(logs)
    try:
        yield stack.start()
    finally:
        stack.stop()


def run(cases: list[str], documents: int, logs: Path) -> list[Outcome]:
    outcomes = []
    with chaos_stack(logs) as stack:
        for name in cases:
            print(f"-- {name} ({documents} documents)", flush=True)
            outcome = CASES[name](stack, documents)
            print(f"   {outcome}", flush=True)
            outcomes.append(outcome)
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    head = (
        f"{'case':<17}{'jobs':>6}{'lost':>6}{'called 2x':>11}{'cost 2x':>9}{'recovery s':>12}{'alive':>7}"
        "  verdict"
    )
    rows = [head, "-" * len(head)]
    for o in outcomes:
        recovery = f"{o.recovery_s:.1f}" if o.recovery_s is not None else "never"
        verdict = "ok" if o.passed else "FAILED"
        rows.append(
            f"{o.case:<17}{o.jobs:>6}{o.lost:>6}{o.called_twice:>11}{o.cost_twice:>9}{recovery:>12}"
            f"{'yes' if o.all_alive else 'NO':>7}  {verdict}  {json.dumps(o.notes)}"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=5000, help="Documents per batch.")
    parser.add_argument("--quick", action="store_true", help="Batches of 300 documents.")
    parser.add_argument("--cases", default=",".join(CASES), help=f"Comma-separated, of: {', '.join(CASES)}.")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/llmqueue-chaos"), help="The processes' logs.")
    args = parser.parse_args()
    documents = 300 if args.quick else args.documents
    outcomes = run([c.strip() for c in args.cases.split(",") if c.strip()], documents, args.logs)
    print(report(outcomes))
    out = ROOT / "bench" / "results" / f"chaos-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
