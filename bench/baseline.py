"""The bare-client baseline: N chat completions through one `openai.AsyncOpenAI` client.

The same emulator, the same request and the same number of calls in flight as the pipeline's
provider worker, with nothing else: no API, no queue, no database. The client uses the SDK's
aiohttp transport (`DefaultAioHttpClient`) with retries off, as the provider worker does.

Run alone it prints one JSON object (wall time, calls/s, CPU ms per call, peak RSS, p50/p99
call latency):

    python -m bench.baseline --url http://127.0.0.1:8765 --jobs 2000 --concurrency 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import openai

MODEL = "gpt-4o-mini"
PROMPT = "Summarise in one sentence: llmqueue runs LLM generation jobs asynchronously and durably."
MAX_TOKENS = 64


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{PROMPT} (document {i})"}]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def run(url: str, jobs: int, concurrency: int) -> dict[str, Any]:
    client = openai.AsyncOpenAI(
        api_key="emulator-key-not-secret",
        base_url=url.rstrip("/") + "/openai/v1",
        max_retries=0,
        timeout=120,
        http_client=openai.DefaultAioHttpClient(timeout=120),
    )
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with gate:
            started = time.perf_counter()
            try:
                await client.chat.completions.create(
                    model=MODEL,
                    messages=messages(i),  # type: ignore[arg-type]
                    max_tokens=MAX_TOKENS,
                )
            except openai.OpenAIError:
                failures += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)

    # One warm-up call so the first batch does not pay for connection setup alone.
    await one(-1)
    latencies.clear()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await client.close()
    return summary(jobs, concurrency, latencies, failures, wall, cpu)


def summary(
    jobs: int, concurrency: int, latencies: list[float], failures: int, wall: float, cpu: float
) -> dict[str, Any]:
    """One baseline run's figures, the same for every baseline (this one and LiteLLM's)."""
    return {
        "jobs": jobs,
        "concurrency": concurrency,
        "succeeded": len(latencies),
        "failed": failures,
        "wall_s": wall,
        "jobs_per_s": jobs / wall,
        "cpu_ms_per_job": cpu * 1000 / jobs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": percentile(latencies, 0.99),
    }


def cli(run_baseline: Callable[[str, int, int], Awaitable[dict[str, Any]]], doc: str | None) -> None:
    """The command line every baseline shares: `--url`, `--jobs`, `--concurrency`; JSON out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="The emulator's base URL.")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run_baseline(args.url, args.jobs, args.concurrency))))


if __name__ == "__main__":
    cli(run, __doc__)
