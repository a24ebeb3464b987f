"""Submit-to-provider latency, unloaded: how long a job takes from its POST to reaching the
provider, when nothing else is running.

A fresh stack (`bench._pipeline_stack`: API, dispatcher, one provider worker, a new Postgres
database) and the emulator answering at once. Jobs are submitted one at a time, each after the
one before has reached the provider and a pause (`--gap-ms`), so every job finds the stack
idle. A job's latency is the emulator's arrival time of its call (`t` in its call log, the
wall clock, when the request was read) minus the time the client began its POST; the
emulator and this process share the host's clock. The p50 target is 10 ms, the p99 50 ms.

Each run also measures, in the same minutes, the two legs no pipeline can skip, as a floor:
the request in (a POST's start to its job drafted in the API's route, `created_at`) and the
call out (a bare `AsyncOpenAI` call's start to its arrival at the emulator, one at a time).
Between them a job must be committed, routed, queued and leased.

    python -m bench.latency [--jobs 300] [--gap-ms 50] [--repeat 3] [--src DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import psycopg

from bench._pipeline_stack import ROOT, Emulator, PipelineStack, StackOptions
from bench.baseline import MAX_TOKENS, MODEL, messages, percentile

RESULTS_DIR = ROOT / "bench" / "results"


def calls_so_far(emulator: Emulator) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = httpx.get(f"{emulator.url}/_emulator/calls", timeout=10).json()
    return rows


def measure(
    stack: PipelineStack, emulator: Emulator, jobs: int, gap_s: float
) -> tuple[list[float], dict[str, float]]:
    """Milliseconds from each POST's start to its call's arrival at the emulator, and the p50
    of each step on the way (from Postgres's timestamps and the emulator's)."""
    emulator.configure(latency_ms=0)
    latencies: list[float] = []
    arrivals: list[float] = []
    starts: list[float] = []
    headers = {"Authorization": f"Bearer {stack.key}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as http:
        for i in range(-20, jobs):  # 20 warm-up jobs: every process, pool and client warm
            seen = len(calls_so_far(emulator))
            body = {"model": MODEL, "messages": messages(i), "max_tokens": MAX_TOKENS}
            started = time.time()
            r = http.post("/v1/jobs", json=body)
            r.raise_for_status()
            deadline = time.monotonic() + 30
            while True:
                calls = calls_so_far(emulator)
                if len(calls) > seen:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {r.json()['id']} did not reach the provider in 30 s")
                time.sleep(0.002)
            if i >= 0:
                latencies.append((float(calls[seen]["t"]) - started) * 1000)
                arrivals.append(float(calls[seen]["t"]))
                starts.append(started)
            time.sleep(gap_s)
    return latencies, phases(stack, starts, arrivals)


def phases(stack: PipelineStack, starts: list[float], arrivals: list[float]) -> dict[str, float]:
    """p50 of: POST begun -> job drafted (created_at) -> attempt routed -> attempt claimed -> call
    at the provider."""
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM j.created_at), EXTRACT(EPOCH FROM a.created_at),"
            " EXTRACT(EPOCH FROM a.started_at) FROM jobs j JOIN attempts a ON a.job_id = j.id"
            " WHERE j.owner_id = %s ORDER BY j.created_at",
            (stack.owner_id,),
        ).fetchall()
    rows = rows[-len(arrivals) :]
    return {
        "submitted_to_drafted_ms": statistics.median(
            (float(r[0]) - t) * 1000 for r, t in zip(rows, starts, strict=True)
        ),
        "drafted_to_routed_ms": statistics.median((float(r[1]) - float(r[0])) * 1000 for r in rows),
        "routed_to_claimed_ms": statistics.median((float(r[2]) - float(r[1])) * 1000 for r in rows),
        "claimed_to_provider_ms": statistics.median(
            (t - float(r[2])) * 1000 for r, t in zip(rows, arrivals, strict=True)
        ),
    }


def sdk_leg(emulator: Emulator, calls: int, gap_s: float) -> float:
    """p50 milliseconds from a bare `AsyncOpenAI` call's start (the client bench.baseline uses)
    to its arrival at the emulator, calls made one at a time."""

    async def run() -> list[float]:
        client = openai.AsyncOpenAI(
            api_key="emulator-key-not-secret",
            base_url=emulator.url.rstrip("/") + "/openai/v1",
            max_retries=0,
            http_client=openai.DefaultAioHttpClient(timeout=30),
        )
        legs: list[float] = []
        for i in range(-10, calls):
            seen = len(calls_so_far(emulator))
            started = time.time()
            await client.chat.completions.create(
                model=MODEL,
                messages=messages(i),  # type: ignore[arg-type]
                max_tokens=MAX_TOKENS,
            )
            if i >= 0:
                legs.append((float(calls_so_far(emulator)[seen]["t"]) - started) * 1000)
            await asyncio.sleep(gap_s)
        await client.close()
        return legs

    emulator.configure(latency_ms=0)
    return statistics.median(asyncio.run(run()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=300)
    p.add_argument("--gap-ms", type=float, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--src",
        type=Path,
        default=ROOT,
        help="Run the stack from this source tree (e.g. a `git archive` of a commit).",
    )
    args = p.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="llmq-latency-"))
    emulator = Emulator(log_dir)
    runs: list[dict[str, float]] = []
    try:
        for i in range(args.repeat):
            with PipelineStack(
                emulator.url, StackOptions(provider_concurrency=50), log_dir, args.src
            ) as stack:
                lat, steps = measure(stack, emulator, args.jobs, args.gap_ms / 1000)
            sdk = sdk_leg(emulator, min(args.jobs, 100), args.gap_ms / 1000)
            run = {"p50_ms": statistics.median(lat), "p99_ms": percentile(lat, 0.99), "max_ms": max(lat)}
            run["floor_ms"] = steps["submitted_to_drafted_ms"] + sdk
            runs.append(run | steps | {"sdk_leg_ms": sdk})
            print(
                f"run {i + 1}: p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, "
                f"max {run['max_ms']:.1f} ms; p50 steps: submitted->drafted "
                f"{steps['submitted_to_drafted_ms']:.1f}, drafted->routed "
                f"{steps['drafted_to_routed_ms']:.1f}, "
                f"routed->claimed {steps['routed_to_claimed_ms']:.1f}, "
                f"claimed->provider {steps['claimed_to_provider_ms']:.1f} ms; "
                f"bare SDK call->provider {sdk:.1f} ms",
                flush=True,
            )
    finally:
        emulator.stop()
    p50 = statistics.median(r["p50_ms"] for r in runs)
    p99 = statistics.median(r["p99_ms"] for r in runs)
    floor = statistics.median(r["floor_ms"] for r in runs)
    print(
        f"\nsubmit -> provider, unloaded, {args.jobs} jobs a run, medians of {len(runs)}: p50 {p50:.1f} ms "
        f"(target 10), p99 {p99:.1f} ms (target 50)\n"
        f"floor: request in + bare SDK call out = {floor:.1f} ms, before any commit, routing, "
        f"broker hop or lease"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"latency-{stamp}.json"
    summary = {
        "when": stamp,
        "args": {**vars(args), "src": str(args.src)},
        "runs": runs,
        "p50_ms": p50,
        "p99_ms": p99,
        "floor_ms": floor,
    }
    out.write_text(json.dumps(summary))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
