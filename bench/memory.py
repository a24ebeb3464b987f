"""A provider worker's memory: its resident size with 1,000 calls in flight, and how it grows
over a long run (issue 13: at most 300 MB at 1,000 in flight, under 10% growth over 100,000
jobs).

Two parts, each on a fresh stack (`bench._pipeline_stack`: API, dispatcher, one provider
worker, a new Postgres database) and the emulator in its own process:

1. In flight: the provider worker takes 1,000 calls at once (`-c 1000`), the emulator holds
   each for `--hold-s` seconds; once 1,000 calls have reached the emulator, the worker's
   resident size (VmRSS) is read.
2. Over time: `--jobs` jobs (default 100,000) at 0 ms provider latency, submitted in rounds of
   `--round` jobs; the worker's VmRSS is read after each round. Growth is the last reading
   against the reading after the first 10% of the jobs (imports done, pools and caches full).

    python -m bench.memory [--jobs 100000] [--round 5000] [--hold-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench._pipeline_stack import ROOT, Emulator, PipelineStack, StackOptions, rss_mb
from bench.pipeline import submit_all, wait_done

RESULTS_DIR = ROOT / "bench" / "results"


def in_flight(emulator: Emulator, log_dir: Path, calls: int, hold_s: float) -> dict[str, float]:
    options = StackOptions(provider_concurrency=calls, dispatch_concurrency=8)
    with PipelineStack(emulator.url, options, log_dir) as stack:
        worker = stack.providers[0].pid
        emulator.configure(latency_ms=0)
        asyncio.run(submit_all(stack.api_url, stack.warmup_key, 20, 20))
        idle = rss_mb(worker)
        emulator.configure(latency_ms=hold_s * 1000)
        started = time.monotonic()
        asyncio.run(submit_all(stack.api_url, stack.key, calls, 64))
        while True:
            arrived = len(httpx.get(f"{emulator.url}/_emulator/calls", timeout=30).json())
            if arrived >= calls:
                break
            if time.monotonic() - started > hold_s * 0.8:
                raise RuntimeError(f"only {arrived} of {calls} calls in flight before the first answers")
            time.sleep(0.2)
        held = rss_mb(worker)
        asyncio.run(wait_done(stack.database_url, stack.owner_id, calls, 300, stack))
        return {"calls": calls, "idle_rss_mb": idle, "in_flight_rss_mb": held}


def over_time(emulator: Emulator, log_dir: Path, jobs: int, round_size: int) -> dict[str, Any]:
    with PipelineStack(emulator.url, StackOptions(), log_dir) as stack:
        worker = stack.providers[0].pid
        emulator.configure(latency_ms=0)
        readings: list[tuple[int, float]] = []
        done = 0
        while done < jobs:
            n = min(round_size, jobs - done)
            asyncio.run(submit_all(stack.api_url, stack.key, n, 64, first=done))
            done += n
            if asyncio.run(wait_done(stack.database_url, stack.owner_id, done, 900, stack)) < done:
                raise RuntimeError(f"jobs did not end within 900 s of round {len(readings) + 1}")
            readings.append((done, rss_mb(worker)))
            emulator.configure(latency_ms=0)  # resets its call log, which would grow too
            print(f"  {done:>7} jobs: provider worker RSS {readings[-1][1]:.0f} MiB", flush=True)
        settled = next(rss for n, rss in readings if n >= jobs // 10)
        last = readings[-1][1]
        return {
            "jobs": jobs,
            "readings": readings,
            "rss_after_10pct_mb": settled,
            "rss_end_mb": last,
            "growth_pct": (last - settled) * 100 / settled,
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=1000, help="Calls in flight in part 1.")
    p.add_argument(
        "--hold-s", type=float, default=20, help="How long the emulator holds each call in part 1."
    )
    p.add_argument("--jobs", type=int, default=100_000, help="Jobs in part 2.")
    p.add_argument("--round", type=int, default=5000, help="Jobs between readings in part 2.")
    args = p.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="llmq-memory-"))
    emulator = Emulator(log_dir)
    try:
        held = in_flight(emulator, log_dir, args.calls, args.hold_s)
        print(
            f"{held['calls']} calls in flight: provider worker RSS {held['in_flight_rss_mb']:.0f} MiB "
            f"(idle {held['idle_rss_mb']:.0f} MiB; target <= 300)",
            flush=True,
        )
        grown = over_time(emulator, log_dir, args.jobs, args.round)
        print(
            f"{grown['jobs']} jobs: RSS {grown['rss_after_10pct_mb']:.0f} MiB after 10%, "
            f"{grown['rss_end_mb']:.0f} MiB at the end: {grown['growth_pct']:+.1f}% (target < 10%)"
        )
    finally:
        emulator.stop()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"memory-{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "args": vars(args), "in_flight": held, "over_time": grown}))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
