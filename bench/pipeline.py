"""Issue 2's benchmark: N jobs through the whole pipeline against a bare AsyncOpenAI client.

One run: the emulator (`llmqueue emulator`, its own process) answers every call after L ms.
The bare client (`bench.baseline`, its own process) makes N calls holding C in flight. Then a
fresh stack (`bench._pipeline_stack`: new Postgres database, own Redis prefix, API, a
dispatcher worker and provider worker(s) of C threads in all) takes N jobs submitted over HTTP
(`POST /v1/jobs`, S concurrent clients) and the run ends when Postgres counts N finished jobs.

Reported per run: wall time (first submission to the last `finished_at`), jobs/s, CPU ms per
job summed over API, dispatcher and provider worker processes (the emulator, this process's
HTTP clients and this database's Postgres backends reported apart), p50/p99 submission-to-done
(`jobs.created_at` -> `finished_at`), provider worker peak RSS, and pipeline wall / bare wall.
The target (issue 2, a benchmark target, not a test) is a ratio <= 1.25.

    python -m bench.pipeline                      # 2,000 jobs at 1,000 ms, C = 200, once
    python -m bench.pipeline --repeat 3 --jobs 500 --latency-ms 200

Results go to bench/results/pipeline-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench._pipeline_stack import (
    ROOT,
    CpuMeter,
    Emulator,
    PipelineStack,
    StackOptions,
    cpu_seconds,
    peak_rss_mb,
)
from bench.baseline import MAX_TOKENS, MODEL, messages, percentile
from core.clock import aware

RESULTS_DIR = ROOT / "bench" / "results"
TARGET_RATIO = 1.25
ENDED = ("succeeded", "failed", "cancelled")


def job_body(i: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages(i), "max_tokens": MAX_TOKENS}


async def submit_all(api_url: str, key: str, jobs: int, concurrency: int, first: int = 0) -> dict[str, Any]:
    """POST /v1/jobs N times with `concurrency` clients; returns timing and failures."""
    gate = asyncio.Semaphore(concurrency)
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(
        api_url, connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=120)
    ) as http:

        async def one(i: int) -> None:
            async with gate:
                try:
                    async with http.post("/v1/jobs", json=job_body(first + i)) as r:
                        if r.status != 202:
                            errors.append(f"{r.status}: {(await r.text())[:200]}")
                        else:
                            await r.read()
                except aiohttp.ClientError as exc:
                    errors.append(repr(exc))

        await asyncio.gather(*(one(i) for i in range(jobs)))
    return {"submit_s": time.perf_counter() - t0, "submit_errors": len(errors), "first_errors": errors[:3]}


async def wait_done(conninfo: str, owner_id: str, jobs: int, timeout: float, stack: PipelineStack) -> int:
    """Poll Postgres until `jobs` of this owner's jobs have ended; returns how many did."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM jobs WHERE owner_id = %s AND status = ANY(%s)", (owner_id, list(ENDED))
            )
            row = await cur.fetchone()
            done = int(row[0]) if row else 0
            if done >= jobs or time.monotonic() > deadline:
                return done
            stack.check_alive()
            await asyncio.sleep(0.1)


def postgres_backends(conninfo: str, db_name: str) -> list[int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db_name,)).fetchall()
    return [int(r[0]) for r in rows]


async def run_pipeline(stack: PipelineStack, emulator: Emulator, args: argparse.Namespace) -> dict[str, Any]:
    n, conninfo = args.jobs, stack.database_url
    # Warm up: every process started, SDK clients built, pools filled, all through the real path.
    emulator.configure(latency_ms=50)
    warm = await submit_all(
        stack.api_url,
        stack.warmup_key,
        args.warmup,
        min(args.warmup, args.submit_concurrency),
        first=-args.warmup,
    )
    if warm["submit_errors"]:
        raise RuntimeError(f"warm-up submissions failed: {warm['first_errors']}")
    owner_row = None
    with psycopg.connect(conninfo) as conn:
        owner_row = conn.execute("SELECT id FROM api_keys WHERE name = 'bench-warmup'").fetchone()
    assert owner_row is not None
    if await wait_done(conninfo, owner_row[0], args.warmup, 60, stack) < args.warmup:
        raise RuntimeError("warm-up jobs did not finish within 60 s")
    if args.provider_workers > 1:
        time.sleep(3)  # the other provider workers finish starting
    emulator.configure(latency_ms=args.latency_ms)
    time.sleep(0.5)

    roots = {
        "api": stack.api.pid if stack.api else 0,
        "dispatcher": stack.dispatcher.pid if stack.dispatcher else 0,
    }
    roots.update({c.name: c.pid for c in stack.providers})
    meter = CpuMeter(roots)
    emu_meter = CpuMeter({"emulator": emulator.child.pid})
    pg_start = {p: cpu_seconds(p) for p in postgres_backends(conninfo, stack.db_name)}
    load_before = os.getloadavg()
    meter.start()
    emu_meter.start()
    self_cpu0 = time.process_time()
    t0_wall = datetime.now(UTC)
    t0 = time.perf_counter()
    timeout = max(600.0, 20 * n * args.latency_ms / 1000 / args.concurrency)
    profilers = start_profilers(args.profile, roots) if args.profile else []
    submitted = await submit_all(stack.api_url, stack.key, n, args.submit_concurrency)
    accepted = n - submitted["submit_errors"]
    if submitted["submit_errors"]:
        print(
            f"warning: {submitted['submit_errors']} submissions failed: {submitted['first_errors']}",
            file=sys.stderr,
        )
    done = await wait_done(conninfo, stack.owner_id, accepted, timeout, stack)
    polled_wall = time.perf_counter() - t0
    stop_profilers(profilers)
    used = meter.stop()
    emu_used = emu_meter.stop()["emulator"]
    self_cpu = time.process_time() - self_cpu0
    pg_end = {p: cpu_seconds(p) for p in postgres_backends(conninfo, stack.db_name)}
    pg_used = sum(t - pg_start.get(p, 0.0) for p, t in pg_end.items())
    if done < accepted:
        raise RuntimeError(f"only {done} of {accepted} accepted jobs ended within {timeout:.0f} s")

    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT status, created_at, finished_at FROM jobs WHERE owner_id = %s", (stack.owner_id,)
        ).fetchall()
        # Where the time went, per job's succeeded attempt: routed (attempt created), claimed
        # by a provider worker (started), answered and written (finished).
        phases = conn.execute(
            "SELECT EXTRACT(EPOCH FROM a.created_at - j.created_at) * 1000,"
            " EXTRACT(EPOCH FROM a.started_at - a.created_at) * 1000,"
            " EXTRACT(EPOCH FROM j.finished_at - a.started_at) * 1000, a.latency_ms"
            " FROM jobs j JOIN attempts a ON a.job_id = j.id AND a.status = 'succeeded'"
            " WHERE j.owner_id = %s",
            (stack.owner_id,),
        ).fetchall()
    succeeded = sum(1 for r in rows if r[0] == "succeeded")
    lat = [(r[2] - r[1]).total_seconds() * 1000 for r in rows if r[2] is not None]
    last = max(aware(r[2]) for r in rows if r[2] is not None)
    wall = (last - t0_wall).total_seconds()
    pipeline_cpu = sum(used.values())
    return {
        "jobs": n,
        "succeeded": succeeded,
        "failed": len(rows) - succeeded,
        "wall_s": wall,
        "polled_wall_s": polled_wall,
        "jobs_per_s": n / wall,
        "submit_s": submitted["submit_s"],
        "submit_per_s": n / submitted["submit_s"],
        "submit_errors": submitted["submit_errors"],
        "cpu_ms_per_job": pipeline_cpu * 1000 / n,
        "cpu_ms_per_job_by_process": {k: v * 1000 / n for k, v in used.items()},
        "emulator_cpu_ms_per_job": emu_used * 1000 / n,
        "submitter_cpu_ms_per_job": self_cpu * 1000 / n,
        "postgres_cpu_ms_per_job": pg_used * 1000 / n,
        "p50_ms": statistics.median(lat),
        "phase_p50_ms": {
            name: statistics.median(float(row[i]) for row in phases) if phases else None
            for i, name in enumerate(("to_dispatch", "to_claim", "to_done", "call"))
        },
        "p99_ms": percentile(lat, 0.99),
        "provider_peak_rss_mb": max(peak_rss_mb(c.pid) for c in stack.providers),
        "loadavg_before": load_before,
    }


def start_profilers(folder: Path, roots: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy (`PY_SPY`, else on the PATH) recording each process, collapsed stacks."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = os.environ.get("PY_SPY", "py-spy")
    procs = []
    for name, pid in roots.items():
        cmd = [
            exe,
            "record",
            "--nonblocking",
            "--subprocesses",
            "--gil",  # only samples holding the GIL: where Python spends CPU, not where it waits
            "--format",
            "raw",
            "-r",
            "200",
            "-o",
            str(folder / f"{name}.txt"),
            "-p",
            str(pid),
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


LITELLM_PYTHON = ROOT / "bench" / ".venv-litellm" / "bin" / "python"


def run_baseline(emulator: Emulator, args: argparse.Namespace, litellm: bool = False) -> dict[str, Any]:
    """The bare AsyncOpenAI client (`bench.baseline`), or with `litellm` LiteLLM's Router
    (`bench.litellm_baseline`, in its own virtual environment), in a process of its own."""
    emulator.configure(latency_ms=args.latency_ms)
    emu_meter = CpuMeter({"emulator": emulator.child.pid})
    emu_meter.start()
    out = subprocess.run(
        [
            str(LITELLM_PYTHON) if litellm else sys.executable,
            "-m",
            "bench.litellm_baseline" if litellm else "bench.baseline",
            "--url",
            emulator.url,
            "--jobs",
            str(args.jobs),
            "--concurrency",
            str(args.concurrency),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["emulator_cpu_ms_per_job"] = emu_meter.stop()["emulator"] * 1000 / args.jobs
    return result


def med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def print_table(repeats: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    pipes = [r["pipeline"] for r in repeats]
    bares = [r["baseline"] for r in repeats if r.get("baseline")]
    ratios = [r["ratio"] for r in repeats if r.get("ratio") is not None]
    print(
        f"\n{args.jobs} jobs, provider latency {args.latency_ms:g} ms, C = {args.concurrency} in flight "
        f"({args.provider_workers} provider worker(s)), dispatcher -c {args.dispatch_concurrency}, "
        f"API workers {args.api_workers}, {args.submit_concurrency} submitting clients; "
        f"{len(repeats)} run(s)\n"
    )
    head = (
        f"{'run':<5}{'system':<10}{'wall s':>8}{'jobs/s':>8}{'CPU ms/job':>11}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'RSS MB':>8}{'ratio':>7}   CPU ms/job by process (emulator, Postgres apart)"
    )
    print(head)
    print("-" * len(head))
    for i, r in enumerate(repeats, 1):
        p, b = r["pipeline"], r.get("baseline")
        if b:
            print(
                f"{i:<5}{'bare':<10}{b['wall_s']:>8.2f}{b['jobs_per_s']:>8.1f}{b['cpu_ms_per_job']:>11.2f}"
                f"{b['p50_ms']:>9.0f}{b['p99_ms']:>9.0f}{b['peak_rss_mb']:>8.0f}{'':>7}   "
                f"emulator {b['emulator_cpu_ms_per_job']:.2f}"
            )
        lite = r.get("litellm")
        if lite:
            print(
                f"{i:<5}{'litellm':<10}{lite['wall_s']:>8.2f}{lite['jobs_per_s']:>8.1f}"
                f"{lite['cpu_ms_per_job']:>11.2f}{lite['p50_ms']:>9.0f}{lite['p99_ms']:>9.0f}"
                f"{lite['peak_rss_mb']:>8.0f}{'':>7}   emulator {lite['emulator_cpu_ms_per_job']:.2f}"
            )
        parts = " ".join(f"{k} {v:.2f}" for k, v in p["cpu_ms_per_job_by_process"].items())
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        print(
            f"{i:<5}{'pipeline':<10}{p['wall_s']:>8.2f}{p['jobs_per_s']:>8.1f}{p['cpu_ms_per_job']:>11.2f}"
            f"{p['p50_ms']:>9.0f}{p['p99_ms']:>9.0f}{p['provider_peak_rss_mb']:>8.0f}{ratio:>7}   "
            f"{parts}; emulator {p['emulator_cpu_ms_per_job']:.2f}, "
            f"postgres {p['postgres_cpu_ms_per_job']:.2f}, submitter {p['submitter_cpu_ms_per_job']:.2f}"
        )
        phase = p.get("phase_p50_ms") or {}
        if phase.get("to_done") is not None:
            print(
                f"{'':<15}p50 submit->routed {phase['to_dispatch']:.0f} ms, routed->claimed "
                f"{phase['to_claim']:.0f} ms, claimed->done {phase['to_done']:.0f} ms "
                f"(the provider call itself {phase['call']:.0f} ms)"
            )
    summary: dict[str, Any] = {
        "pipeline_wall_s": med(pipes, "wall_s"),
        "pipeline_jobs_per_s": med(pipes, "jobs_per_s"),
        "pipeline_cpu_ms_per_job": med(pipes, "cpu_ms_per_job"),
        "pipeline_p50_ms": med(pipes, "p50_ms"),
        "pipeline_p99_ms": med(pipes, "p99_ms"),
        "provider_peak_rss_mb": med(pipes, "provider_peak_rss_mb"),
        "submit_per_s": med(pipes, "submit_per_s"),
    }
    if bares:
        summary.update(
            {
                "bare_wall_s": med(bares, "wall_s"),
                "bare_jobs_per_s": med(bares, "jobs_per_s"),
                "bare_cpu_ms_per_job": med(bares, "cpu_ms_per_job"),
                "bare_p50_ms": med(bares, "p50_ms"),
                "bare_p99_ms": med(bares, "p99_ms"),
                "ratio": statistics.median(ratios),
                "ratios": ratios,
            }
        )
    lites = [r["litellm"] for r in repeats if r.get("litellm")]
    if lites:
        summary.update(
            {
                "litellm_wall_s": med(lites, "wall_s"),
                "litellm_cpu_ms_per_job": med(lites, "cpu_ms_per_job"),
                "litellm_failed": med(lites, "failed"),
                "vs_litellm_wall": statistics.median(
                    r["pipeline"]["wall_s"] / r["litellm"]["wall_s"] for r in repeats if r.get("litellm")
                ),
            }
        )
    print("-" * len(head))
    s = summary
    print(
        f"medians: pipeline wall {s['pipeline_wall_s']:.2f} s, {s['pipeline_jobs_per_s']:.1f} jobs/s, "
        f"{s['pipeline_cpu_ms_per_job']:.2f} CPU ms/job, p50 {s['pipeline_p50_ms']:.0f} ms, "
        f"p99 {s['pipeline_p99_ms']:.0f} ms, provider peak RSS {s['provider_peak_rss_mb']:.0f} MB, "
        f"submissions {s['submit_per_s']:.0f}/s"
    )
    if bares:
        verdict = "meets" if summary["ratio"] <= TARGET_RATIO else "MISSES"
        print(
            f"         bare wall {s['bare_wall_s']:.2f} s, {s['bare_cpu_ms_per_job']:.2f} CPU ms/call; "
            f"ratio {s['ratio']:.2f} (runs: {', '.join(f'{x:.2f}' for x in ratios)}) "
            f"-> {verdict} the <= {TARGET_RATIO} target"
        )
    if lites:
        print(
            f"         LiteLLM Router wall {s['litellm_wall_s']:.2f} s, {s['litellm_cpu_ms_per_job']:.2f} "
            f"CPU ms/call; pipeline wall / LiteLLM wall {s['vs_litellm_wall']:.2f}; pipeline CPU "
            f"(all processes, Postgres apart) / LiteLLM CPU "
            f"{s['pipeline_cpu_ms_per_job'] / s['litellm_cpu_ms_per_job']:.2f}"
        )
    return summary


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000, help="Jobs per run (N).")
    p.add_argument("--latency-ms", type=float, default=1000, help="Emulated provider latency (L).")
    p.add_argument(
        "--concurrency",
        type=int,
        default=200,
        help="Calls in flight (C): the provider workers' threads in all, and the bare client's.",
    )
    p.add_argument("--repeat", type=int, default=1, help="Runs; medians are reported.")
    p.add_argument("--submit-concurrency", type=int, default=64, help="Concurrent HTTP submitting clients.")
    p.add_argument("--dispatch-concurrency", type=int, default=8, help="Dispatcher worker threads (K).")
    p.add_argument("--provider-workers", type=int, default=1, help="Provider worker processes sharing C.")
    p.add_argument("--api-workers", type=int, default=1, help="Uvicorn worker processes for the API.")
    p.add_argument("--warmup", type=int, default=20, help="Warm-up jobs before each measured run.")
    p.add_argument("--skip-baseline", action="store_true", help="Only the pipeline.")
    p.add_argument(
        "--litellm",
        action="store_true",
        help="Also run LiteLLM's Router as a baseline (needs bench/.venv-litellm: make bench-litellm).",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Extra environment for the stack's processes (repeatable).",
    )
    p.add_argument(
        "--src",
        type=Path,
        default=ROOT,
        help="Run the stack from this source tree (e.g. a `git archive` of a commit).",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="Record each pipeline process with py-spy into this folder (collapsed stacks).",
    )
    p.add_argument("--logs", type=Path, default=None, help="Keep the processes' logs in this folder.")
    args = p.parse_args(argv)
    if args.concurrency % args.provider_workers:
        p.error("--concurrency must be a multiple of --provider-workers")
    if args.litellm and not LITELLM_PYTHON.exists():
        p.error(f"--litellm needs LiteLLM in its own environment (make bench-litellm makes {LITELLM_PYTHON})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="llmq-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    options = StackOptions(
        provider_concurrency=args.concurrency // args.provider_workers,
        provider_workers=args.provider_workers,
        dispatch_concurrency=args.dispatch_concurrency,
        api_workers=args.api_workers,
        extra_env=dict(e.split("=", 1) for e in args.env),
    )
    repeats: list[dict[str, Any]] = []
    emulator = Emulator(log_dir, args.src.resolve())
    try:
        for i in range(args.repeat):
            run: dict[str, Any] = {}
            if not args.skip_baseline:
                run["baseline"] = run_baseline(emulator, args)
                print(f"run {i + 1}: bare client {run['baseline']['wall_s']:.2f} s", flush=True)
            if args.litellm:
                run["litellm"] = run_baseline(emulator, args, litellm=True)
                print(f"run {i + 1}: LiteLLM Router {run['litellm']['wall_s']:.2f} s", flush=True)
            with PipelineStack(emulator.url, options, log_dir, args.src.resolve()) as stack:
                run["pipeline"] = asyncio.run(run_pipeline(stack, emulator, args))
            run["ratio"] = (
                run["pipeline"]["wall_s"] / run["baseline"]["wall_s"] if "baseline" in run else None
            )
            print(
                f"run {i + 1}: pipeline {run['pipeline']['wall_s']:.2f} s"
                + (f", ratio {run['ratio']:.2f}" if run["ratio"] else ""),
                flush=True,
            )
            repeats.append(run)
    except Exception as exc:
        print(f"benchmark failed: {exc}\nprocess logs in {log_dir}", file=sys.stderr)
        raise
    finally:
        emulator.stop()
    summary = print_table(repeats, args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"pipeline-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "options": asdict(options),
                "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "target_ratio": TARGET_RATIO,
                "summary": summary,
                "runs": repeats,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nresults: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
