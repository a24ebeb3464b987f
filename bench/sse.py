"""A thousand concurrent SSE clients on `GET /v1/jobs/{id}/stream` against the real stack, with
`/healthz` timed all along (issue 10: "waiting costs no connection").

`python -m bench.sse [--clients 1000] [--jobs N] [--latency-ms 30000] [--chunk-ms 50]`:
starts a `BenchStack` (one API process, one worker for dispatch and OpenAI), creates one API
key per `--per-key` clients (a key may hold LLMQUEUE_MAX_STREAMS_PER_KEY streams open in one
API process, 100 by default), submits `--jobs` streamed jobs (the clients are spread over
them), and opens every client at once on raw asyncio sockets (an HTTP/1.1 GET, the chunked
body decoded, the SSE events counted). The emulator holds each call `--latency-ms` then sends
the answer a word every `--chunk-ms`, so every client is open while its job runs.

Meanwhile a separate process GETs `/healthz` every `--healthz-every` seconds (its own
process, so the clients' parsing does not delay its timing), and Postgres's connections to
the bench database are counted every half second. A client is served when it got HTTP 200,
deltas that add up to the result, and a `done` event saying `succeeded`. Prints the figures
and exits non-zero if a client was not served or `/healthz` p99 was 100 ms or more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from bench.private_services import PrivateServices
from bench.stack import BenchStack, WorkerSpec, percentile

MODEL = "gpt-4o-mini"
PROMPT = "Streaming lets a client show tokens as they are generated instead of waiting for all of it"
HEALTHZ_P99_MS = 100.0


@dataclass
class ClientRead:
    """What one SSE client saw."""

    status: int = 0
    events: Counter[str] = field(default_factory=Counter)
    done_status: str | None = None
    text: str = ""  # the deltas put together (a reset starts it over)
    complete: bool = False  # the deltas added up to the done event's result
    opened_at: float = 0.0  # monotonic, when the response's headers arrived
    ended_at: float = 0.0
    error: str | None = None

    @property
    def served(self) -> bool:
        return self.status == 200 and self.done_status == "succeeded" and self.complete


def raise_open_files() -> int:
    """Raise this process's open-file limit to its hard limit (the API and workers started
    afterwards inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- /healthz, in its own process


def poll_healthz(url: str, every: float, stop: EventType, out: Any) -> None:
    """GET `url` every `every` s until `stop`; put [(monotonic start, ms, status)] on `out`."""
    samples: list[tuple[float, float, int]] = []
    with httpx.Client(timeout=10) as client:
        while not stop.is_set():
            start = time.monotonic()
            try:
                status = client.get(url).status_code
            except httpx.HTTPError:
                status = 0
            samples.append((start, (time.monotonic() - start) * 1000, status))
            time.sleep(max(0.0, every - (time.monotonic() - start)))
    out.put(samples)


# ---------------------------------------------------------------- one SSE client, raw sockets


class OpenCount:
    """Clients whose response has started and not yet ended, and the most at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def up(self) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)

    def down(self) -> None:
        self.now -= 1


async def _body_chunks(reader: asyncio.StreamReader, chunked: bool) -> Any:
    """The response body's bytes as they arrive (chunked transfer decoded)."""
    if not chunked:
        while data := await reader.read(65536):
            yield data
        return
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


async def sse_client(
    host: str, port: int, job_id: str, key: str, opened: OpenCount, timeout: float
) -> ClientRead:
    read = ClientRead()
    writer = None
    counted = False
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                (
                    f"GET /v1/jobs/{job_id}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n"
                    "Connection: close\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            read.status = int((await reader.readuntil(b"\r\n")).split()[1])
            headers = {}
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip().lower()
            if read.status != 200:
                read.error = f"HTTP {read.status}: " + (await reader.read(300)).decode(errors="replace")
                return read
            read.opened_at = time.monotonic()
            opened.up()
            counted = True
            buffer = b""
            async for data in _body_chunks(reader, headers.get("transfer-encoding") == "chunked"):
                buffer += data
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    kind, payload = "message", ""
                    for row in block.decode().splitlines():
                        if row.startswith("event:"):
                            kind = row[6:].strip()
                        elif row.startswith("data:"):
                            payload = row[5:].strip()
                    read.events[kind] += 1
                    if kind == "delta":
                        read.text += json.loads(payload)["text"]
                    elif kind == "reset":
                        read.text = ""
                    elif kind == "done":
                        final = json.loads(payload)
                        read.done_status = final.get("status")
                        read.complete = read.text == final.get("result")
    except Exception as exc:  # a refused, reset or timed-out client: counted as not served
        read.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        read.ended_at = time.monotonic()
        if counted:
            opened.down()
        if writer is not None:
            writer.close()
    return read


async def run_clients(
    host: str, port: int, targets: list[tuple[str, str]], timeout: float
) -> tuple[list[ClientRead], int]:
    opened = OpenCount()
    reads = await asyncio.gather(*(sse_client(host, port, j, k, opened, timeout) for j, k in targets))
    return list(reads), opened.peak


# ---------------------------------------------------------------- the run


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process and its children (uvicorn's workers) have used."""
    root = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [root, *root.children(recursive=True)])


def start_profiler(folder: str, pid: int) -> subprocess.Popen[bytes]:
    """py-spy (`PY_SPY`, else on the PATH) recording the API's samples that hold the GIL."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    exe = os.environ.get("PY_SPY", "py-spy")
    command = [exe, "record", "--nonblocking", "--gil", "-f", "raw", "-r", "100"]
    command += ["-o", str(Path(folder) / "api.txt"), "-p", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def count_connections(db_url: str, db_name: str, stop: threading.Event, out: list[int]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        while not stop.is_set():
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db_name,)
            ).fetchone()
            out.append(int(row[0]) - 1 if row else 0)  # less this counter's own
            stop.wait(0.5)


def run(args: argparse.Namespace) -> dict[str, Any]:
    limit = raise_open_files()
    jobs = args.jobs or args.clients
    keys_needed = -(-args.clients // args.per_key)
    workers = [WorkerSpec("dispatch,provider.openai", args.worker_concurrency)]
    with contextlib.ExitStack() as services:
        where: dict[str, str] = {}
        if not args.shared_services:  # other users of the shared servers neither slow nor limit the run
            private = services.enter_context(PrivateServices())
            where = {"pg_admin_url": private.postgres.url.rsplit("/", 1)[0] + "/postgres"}
            where["redis_url"] = private.redis.url
        stack = services.enter_context(BenchStack(workers=workers, api_workers=args.api_workers, **where))
        stack.configure_emulator({MODEL: {"latency_ms": args.latency_ms, "stream_chunk_ms": args.chunk_ms}})
        keys = [stack.key] + [
            stack._cli("keys", "create", "--name", f"sse{i}") for i in range(1, keys_needed)
        ]
        body = {"messages": [{"role": "user", "content": PROMPT}], "model": MODEL, "stream": True}
        # The jobs are spread evenly over the keys; client c reads job c % jobs with its key.
        pairs: list[tuple[str, str]] = []
        for index, key in enumerate(keys):
            with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}) as client:
                for _ in range(index, jobs, len(keys)):
                    r = client.post("/v1/jobs", json=body, timeout=60)
                    r.raise_for_status()
                    pairs.append((r.json()["id"], key))
        job_ids = [j for j, _ in pairs]
        targets = [pairs[c % jobs] for c in range(args.clients)]
        per_key = Counter(k for _, k in targets)
        assert max(per_key.values()) <= args.per_key, per_key

        stop = multiprocessing.Event()
        out: multiprocessing.Queue[list[tuple[float, float, int]]] = multiprocessing.Queue()
        poller = multiprocessing.Process(
            target=poll_healthz, args=(f"{stack.api_url}/healthz", args.healthz_every, stop, out)
        )
        connections: list[int] = []
        stop_count = threading.Event()
        counter = threading.Thread(
            target=count_connections, args=(stack.db_url, stack.db_name, stop_count, connections)
        )
        poller.start()
        counter.start()
        time.sleep(3.0)  # /healthz before the clients, for comparison
        api_pid = stack.procs[1].pid  # emulator, api, workers: in BenchStack._start's order
        profiler = start_profiler(args.profile, api_pid) if args.profile else None
        api_cpu = cpu_seconds(api_pid)
        started = time.monotonic()
        host, port = "127.0.0.1", int(stack.api_url.rsplit(":", 1)[1])
        reads, peak = asyncio.run(run_clients(host, port, targets, args.timeout))
        ended = time.monotonic()
        api_cpu = cpu_seconds(api_pid) - api_cpu
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(30)
        stop.set()
        samples = out.get(timeout=30)
        poller.join(10)
        stop_count.set()
        counter.join(10)
        final = stack.wait_until_done(job_ids, timeout=120)

    during = [ms for t, ms, _ in samples if started <= t <= ended]
    before = [ms for t, ms, _ in samples if t < started]
    bad_health = Counter(s for _, _, s in samples if s != 200)
    served = [r for r in reads if r.served]
    opened_by = sorted(r.opened_at - started for r in reads if r.opened_at)
    all_open_at = started + (opened_by[-1] if opened_by else 0.0)
    first_end = min((r.ended_at for r in reads), default=ended)
    return {
        "clients": args.clients,
        "jobs": jobs,
        "keys": len(keys),
        "api_workers": args.api_workers,
        "open_file_limit": limit,
        "served": len(served),
        "not_served": Counter(
            (r.status, r.done_status, (r.error or "")[:160]) for r in reads if not r.served
        ).most_common(5),
        "peak_open_streams": peak,
        "all_open_after_s": round(opened_by[-1], 2) if opened_by else None,
        "wall_s": round(ended - started, 2),
        "text_complete": sum(1 for r in reads if r.complete),
        # Deltas a client got: one per entry the worker published; a worker that reads a call's
        # chunks faster than Redis takes them publishes them together, as fewer entries.
        "deltas_per_client": _spread([r.events["delta"] for r in reads]),
        "healthz_samples_during": len(during),
        "healthz_ms_during": _figures(during),
        "healthz_ms_all_open": _figures(  # from the last client's opening to the first one's end
            [ms for t, ms, _ in samples if all_open_at <= t <= first_end]
        ),
        "healthz_ms_before": _figures(before),
        "healthz_not_200": dict(bad_health),
        # Per 5 s from the clients' start: (p50, max) ms, to see when /healthz was slow.
        "healthz_timeline": _timeline([(t - started, ms) for t, ms, _ in samples if t >= started]),
        "db_connections_max": max(connections, default=0),
        "api_cpu_s": round(api_cpu, 1),
        "jobs_final": final,
    }


def _timeline(samples: list[tuple[float, float]], step: float = 5.0) -> list[tuple[int, float, float]]:
    buckets: dict[int, list[float]] = {}
    for at, ms in samples:
        buckets.setdefault(int(at // step), []).append(ms)
    return [
        (int(b * step), round(statistics.median(v), 1), round(max(v), 1)) for b, v in sorted(buckets.items())
    ]


def _spread(values: list[int]) -> dict[str, float]:
    ordered = sorted(values) or [0]
    return {"min": ordered[0], "median": statistics.median(ordered), "max": ordered[-1]}


def _figures(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(percentile(values, 0.5), 1),
        "p99": round(percentile(values, 0.99), 1),
        "max": round(max(values), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument(
        "--jobs", type=int, default=0, help="streamed jobs the clients read (default: one each)"
    )
    parser.add_argument("--api-workers", type=int, default=1, help="uvicorn processes (compose: 2)")
    parser.add_argument("--per-key", type=int, default=100, help="clients per API key (the per-key cap)")
    parser.add_argument("--latency-ms", type=float, default=30000)
    parser.add_argument("--chunk-ms", type=float, default=50)
    parser.add_argument("--worker-concurrency", type=int, default=1000)
    parser.add_argument("--healthz-every", type=float, default=0.05)
    parser.add_argument(
        "--shared-services", action="store_true", help="LLMQUEUE_BENCH_PG/REDIS, not private servers"
    )
    parser.add_argument("--profile", metavar="DIR", help="record the API with py-spy while clients run")
    parser.add_argument("--timeout", type=float, default=300, help="longest a client waits for its done")
    args = parser.parse_args()
    figures = run(args)
    print(json.dumps(figures, indent=2))
    ok = figures["served"] == args.clients and figures["healthz_ms_during"].get("p99", 1e9) < HEALTHZ_P99_MS
    print("PASS" if ok else "FAIL", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
