"""Scale-out: the same jobs through one provider-worker process and through two, each worker
holding the same number of calls in flight (issue 13: two give at least 1.8x the throughput of
one, until the emulator or the CPU is the limit).

Each run starts a fresh stack (`bench._pipeline_stack`) with 1, then 2, provider workers of
`--per-worker` calls in flight each, against the emulator at `--latency-ms`; throughput is
jobs per second from the first submission to the last job's end (`bench.pipeline`'s
measurement). With one worker's concurrency the limit, two workers should double it, until
the machine's CPU (all processes, 2 cores here) is the limit; the CPU per job is reported so
the note can say which limit was met.

    python -m bench.scaling [--jobs 4000] [--per-worker 100] [--latency-ms 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._pipeline_stack import ROOT, Emulator, PipelineStack, StackOptions
from bench.pipeline import parse_args as pipeline_args
from bench.pipeline import run_pipeline

RESULTS_DIR = ROOT / "bench" / "results"


def one_run(emulator: Emulator, log_dir: Path, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    concurrency = workers * args.per_worker
    run_args = pipeline_args(
        [
            "--jobs",
            str(args.jobs),
            "--latency-ms",
            str(args.latency_ms),
            "--concurrency",
            str(concurrency),
            "--provider-workers",
            str(workers),
            "--skip-baseline",
        ]
    )
    options = StackOptions(provider_concurrency=args.per_worker, provider_workers=workers)
    with PipelineStack(emulator.url, options, log_dir) as stack:
        return asyncio.run(run_pipeline(stack, emulator, run_args))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=4000)
    p.add_argument("--per-worker", type=int, default=100, help="Calls in flight per provider worker.")
    p.add_argument("--latency-ms", type=float, default=1000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="llmq-scaling-"))
    emulator = Emulator(log_dir)
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.repeat):
            one = one_run(emulator, log_dir, 1, args)
            two = one_run(emulator, log_dir, 2, args)
            ratio = two["jobs_per_s"] / one["jobs_per_s"]
            runs.append({"one": one, "two": two, "ratio": ratio})
            print(
                f"run {i + 1}: one worker {one['jobs_per_s']:.1f} jobs/s "
                f"({one['cpu_ms_per_job']:.2f} CPU ms/job), "
                f"two {two['jobs_per_s']:.1f} jobs/s ({two['cpu_ms_per_job']:.2f}): x{ratio:.2f}",
                flush=True,
            )
    finally:
        emulator.stop()
    ratio = statistics.median(r["ratio"] for r in runs)
    one_rate = statistics.median(r["one"]["jobs_per_s"] for r in runs)
    two_rate = statistics.median(r["two"]["jobs_per_s"] for r in runs)
    ceiling = args.per_worker * 1000 / args.latency_ms if args.latency_ms else float("inf")
    print(
        f"\nmedians of {len(runs)}: one worker {one_rate:.1f} jobs/s, two {two_rate:.1f} jobs/s: "
        f"x{ratio:.2f} "
        f"(target >= 1.8; a worker's own ceiling is {ceiling:.0f} jobs/s: {args.per_worker} in flight "
        f"/ {args.latency_ms:g} ms)"
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"scaling-{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "args": vars(args), "runs": runs, "ratio": ratio}, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
