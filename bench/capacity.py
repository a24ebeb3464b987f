"""Provider capacity (issue 11): a batch paced to three deployments' rate limits, as the
emulator enforces them.

Three OpenAI deployments (`gpt-4o-mini` 600 RPM, `gpt-4.1-mini` 300 RPM, `gpt-4o` 120 RPM and
a TPM limit that binds first) in a catalog of their own, the emulator refusing with a 429
whatever goes past a limit in its rolling minute. One OpenAI-style batch of `--jobs` lines,
each `"model": "cost"` (the `cost` strategy: cheapest first, spilling to the next deployment
when the first is saturated, so all three may be used), is run three times, each on a fresh
stack (`bench._pipeline_stack`) against the same emulator process:

- **configured**: the limits in the catalog (`rpm`, `tpm`);
- **learned**: the catalog says nothing; the limits come from the rate-limit headers;
- **baseline**: today's behaviour before issue 11, the code of `--baseline-rev` (extracted with
  `git archive`), where nothing paces the calls: a 429 storm, retries, breakers. It runs
  for at most `--baseline-s` seconds (it would take far longer to finish), and the figures
  are over that span.

What is measured, at the emulator (its call log): the share of the combined limit used,
calls answered 200 over the span from the first call to the last answer, divided by what the
limits allow in that span (each deployment's requests per minute, or its tokens per minute
over the mean weight of its calls when that is lower); and the share of calls answered 429.
Targets: configured >= 95% and <= 1%; learned >= 90% and <= 3%.

    python -m bench.capacity [--jobs 5000] [--latency-ms 300] [--scenarios configured,learned,baseline]
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai

from bench._pipeline_stack import ROOT, Emulator, PipelineStack, StackOptions

RESULTS_DIR = ROOT / "bench" / "results"
BATCH_ENDED = ("completed", "failed", "cancelled", "expired")
MAX_TOKENS = 64
SCENARIOS = ("configured", "learned", "baseline")
# The last commit before issue 11's limiter: the catalog's rpm and tpm read by nothing.
BASELINE_REV = "cddc638"


@dataclass(frozen=True)
class Limit:
    model: str
    input_price: str
    output_price: str
    quality: int
    rpm: int
    tpm: int | None = None


# Cheapest first, so the `cost` strategy ranks them in this order.
LIMITS = (
    Limit("gpt-4o-mini", "0.15", "0.60", 62, 600),
    Limit("gpt-4.1-mini", "0.40", "1.60", 70, 300),
    Limit("gpt-4o", "2.50", "10.00", 78, 120, tpm=9000),
)


def catalog_toml(with_limits: bool) -> str:
    """A catalog of the three deployments, with their limits or without."""
    parts = []
    for lim in LIMITS:
        parts.append(
            f'[[models]]\nid = "{lim.model}"\nprovider = "openai"\ncontext_window = 128000\n'
            f'max_output_tokens = 16384\ninput_price = "{lim.input_price}"\n'
            f'output_price = "{lim.output_price}"\ncapabilities = ["streaming"]\n'
            f"quality = {lim.quality}\nlatency_ms = 700\n"
        )
    for lim in LIMITS:
        limits = ""
        if with_limits:
            limits = f"rpm = {lim.rpm}\n" + (f"tpm = {lim.tpm}\n" if lim.tpm else "")
        parts.append(f'[[deployments]]\nname = "openai/{lim.model}"\nmodel = "{lim.model}"\n{limits}')
    return "\n".join(parts)


def emulator_scopes(latency_ms: float) -> dict[str, Any]:
    scopes: dict[str, Any] = {"*": {"latency_ms": latency_ms}}
    for lim in LIMITS:
        scope: dict[str, Any] = {"latency_ms": latency_ms, "rpm": lim.rpm}
        if lim.tpm:
            scope["tpm"] = lim.tpm
        scopes[lim.model] = scope
    return scopes


def batch_file(jobs: int) -> bytes:
    lines = []
    for i in range(jobs):
        words = " ".join(f"w{(i * 13 + j) % 991}" for j in range(20))
        body = {
            "model": "cost",
            "messages": [{"role": "user", "content": f"Item {i}: summarise {words}"}],
            "max_tokens": MAX_TOKENS,
        }
        line = {"custom_id": f"job-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        lines.append(json.dumps(line))
    return ("\n".join(lines) + "\n").encode()


def snapshot(rev: str) -> Path:
    """The code of `rev`, extracted (not checked out: the worktree is left alone)."""
    target = Path(tempfile.mkdtemp(prefix=f"llmq-{rev}-"))
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def run_batch(stack: PipelineStack, data: bytes, *, online: bool, cap_s: float | None) -> dict[str, Any]:
    client = openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=2, timeout=300)
    file_id = client.files.create(file=("jobs.jsonl", io.BytesIO(data)), purpose="batch").id
    extra = {"delivery": "online"} if online else None
    started = time.time()
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", extra_body=extra
    )
    capped = False
    while batch.status not in BATCH_ENDED:
        stack.check_alive()
        if cap_s is not None and time.time() - started > cap_s:
            capped = True
            break
        time.sleep(1)
        batch = client.batches.retrieve(batch.id)
    counts = batch.request_counts
    return {
        "status": batch.status,
        "capped": capped,
        "wall_s": time.time() - started,
        "completed": counts.completed if counts else None,
        "failed": counts.failed if counts else None,
        "started": started,
        "ended": time.time(),
    }


def measure(calls: list[dict[str, Any]], start: float, end: float | None) -> dict[str, Any]:
    """Use of the combined limit and 429s, from the emulator's call log."""
    calls = [c for c in calls if c["t"] >= start and (end is None or c["t"] <= end)]
    ok = [c for c in calls if c["status"] == 200]
    if not ok:
        return {"calls": len(calls), "ok": 0}
    first = min(c["t"] for c in calls)
    last = max(c["t"] for c in ok) if end is None else end
    span_min = max(1e-9, (last - first) / 60)
    per: dict[str, Any] = {}
    allowed_total = 0.0
    for lim in LIMITS:
        mine = [c for c in calls if c["model"] == lim.model]
        mine_ok = [c for c in mine if c["status"] == 200]
        weight = sum(c["tokens"] for c in mine_ok) / len(mine_ok) if mine_ok else 0.0
        allowed_rpm = float(lim.rpm)
        if lim.tpm and weight:
            allowed_rpm = min(allowed_rpm, lim.tpm / weight)
        allowed_total += allowed_rpm
        per[lim.model] = {
            "ok": len(mine_ok),
            "r429": sum(1 for c in mine if c["status"] == 429),
            "allowed_rpm": allowed_rpm,
            "used": len(mine_ok) / (allowed_rpm * span_min),
            "weight": weight,
        }
    timeline: dict[int, dict[str, int]] = {}  # per 30 s from the first call: answers by model and status
    for c in calls:
        bucket = timeline.setdefault(int((c["t"] - first) // 30) * 30, {})
        label = f"{c['model']} {c['status']}"
        bucket[label] = bucket.get(label, 0) + 1
    statuses: dict[int, int] = {}
    for c in calls:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    return {
        "calls": len(calls),
        "ok": len(ok),
        "r429": statuses.get(429, 0),
        "statuses": statuses,
        "span_s": last - first,
        "allowed_rpm": allowed_total,
        "achieved_rpm": len(ok) / span_min,
        "used": len(ok) / (allowed_total * span_min),
        "share_429": statuses.get(429, 0) / len(calls),
        "per_deployment": per,
        "timeline": timeline,
    }


def one_scenario(
    name: str, emulator: Emulator, log_dir: Path, args: argparse.Namespace, data: bytes, src: Path
) -> dict[str, Any]:
    httpx.post(f"{emulator.url}/_emulator/reset", timeout=10).raise_for_status()
    httpx.post(
        f"{emulator.url}/_emulator/config", json={"scopes": emulator_scopes(args.latency_ms)}, timeout=10
    ).raise_for_status()
    catalog = log_dir / f"catalog-{name}.toml"
    catalog.write_text(catalog_toml(with_limits=name == "configured"))
    options = StackOptions(
        provider_concurrency=args.provider_concurrency,
        extra_env={"LLMQUEUE_CATALOG": str(catalog)},
    )
    with PipelineStack(emulator.url, options, log_dir / name, src) as stack:
        cap = args.baseline_s if name == "baseline" else args.timeout_s
        run = run_batch(stack, data, online=name != "baseline", cap_s=cap)
        calls = httpx.get(f"{emulator.url}/_emulator/calls", timeout=60).json()
    figures = measure(calls, run["started"], run["ended"] if run["capped"] else None)
    return {"scenario": name, **run, **figures}


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    targets = {"configured": ">= 95%, <= 1%", "learned": ">= 90%, <= 3%", "baseline": "-"}
    print(
        f"\n{args.jobs} jobs, strategy cost, emulator latency {args.latency_ms:g} ms; limits "
        + ", ".join(f"{lim.model} {lim.rpm} rpm" + (f" + {lim.tpm} tpm" if lim.tpm else "") for lim in LIMITS)
    )
    print(
        f"{'scenario':<11} {'wall s':>7} {'done':>6} {'calls':>6} {'429s':>6} {'429 %':>6} "
        f"{'rpm used':>9} {'allowed':>8} {'share':>6}  per deployment (share, 429s)   target"
    )
    for r in results:
        if not r.get("ok"):
            print(f"{r['scenario']:<11} no call answered")
            continue
        per = "  ".join(
            f"{m.split('-', 1)[1]} {p['used']:.0%}/{p['r429']}" for m, p in r["per_deployment"].items()
        )
        done = f"{r['completed']}" + ("*" if r["capped"] else "")
        print(
            f"{r['scenario']:<11} {r['wall_s']:7.1f} {done:>6} {r['calls']:6d} {r['r429']:6d} "
            f"{r['share_429']:6.2%} {r['achieved_rpm']:9.1f} {r['allowed_rpm']:8.1f} {r['used']:6.1%}  "
            f"{per}   {targets[r['scenario']]}"
        )
    if any(r.get("capped") for r in results):
        print(f"* stopped after {args.baseline_s:g} s; figures over that span")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--latency-ms", type=float, default=300)
    p.add_argument("--provider-concurrency", type=int, default=200)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--baseline-rev", default=BASELINE_REV)
    p.add_argument("--baseline-s", type=float, default=120, help="How long the baseline runs at most.")
    p.add_argument("--timeout-s", type=float, default=3600)
    args = p.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {sorted(unknown)}")
    # Stopped by a signal (a background run ignores SIGINT), it still stops its stacks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log_dir = Path(tempfile.mkdtemp(prefix="llmq-capacity-"))
    data = batch_file(args.jobs)
    emulator = Emulator(log_dir)
    results = []
    try:
        for name in names:
            src = snapshot(args.baseline_rev) if name == "baseline" else ROOT
            (log_dir / name).mkdir()
            print(f"{name}: running ({log_dir / name})", flush=True)
            results.append(one_scenario(name, emulator, log_dir, args, data, src))
            summary = {k: v for k, v in results[-1].items() if k not in ("statuses", "timeline")}
            print(json.dumps(summary, default=str), flush=True)
    finally:
        emulator.stop()
    report(results, args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"capacity-{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "args": vars(args), "results": results}, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
