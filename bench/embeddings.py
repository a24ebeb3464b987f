"""Issue 14's benchmark: chunks embedded through llmqueue against a bare async SDK client.

The same chunks both ways: D documents cut by `routing.chunking.chunk_text` (the cutter
llmqueue's intake uses) and grouped into calls by `routing.embeddings.plan_calls` (the
packing llmqueue uses: 2,048 inputs a call for text-embedding-3-small while their tokens fit).
The emulator (its own process) answers every call after L ms.

- bare: one `openai.AsyncOpenAI` client (aiohttp transport, retries off, the SDK's default
  base64 encoding, as llmqueue's adapter) makes those calls, all in flight at once, and keeps
  the vectors in memory. CPU: this process's.
- llmqueue: a fresh stack (`bench._pipeline_stack`: Postgres database, Redis prefix, API, a
  dispatcher and a provider worker) takes the documents as one document batch in embed mode
  (`POST /v1/document_batches`, mode=embed); "stored" ends when the batch is completed (every
  vector durable in Postgres), "read" when its chunks' vectors have been read back
  (`/results`, base64). CPU: API + dispatcher + provider worker processes (the emulator, this
  process and Postgres apart).

Reported: chunks, calls, chunks per second and CPU ms per 1,000 chunks for each, and the
ratios. Results go to bench/results/embeddings-<time>.json.

    python -m bench.embeddings                         # 20,000 chunks, 256 dims, 200 ms
    python -m bench.embeddings --documents 50 --words 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai

from bench._pipeline_stack import ROOT, CpuMeter, Emulator, PipelineStack, StackOptions
from routing.catalog import get_catalog
from routing.chunking import chunk_text
from routing.embeddings import embedding_inputs, plan_calls

RESULTS_DIR = ROOT / "bench" / "results"
MODEL = "text-embedding-3-small"
WORDS = re.findall(
    r"\w+",
    "river gravel salmon spawning bank willow flood meadow lighthouse keeper lamp wick storm harbour "
    "bees hive pollen rooftop garden sourdough starter flour water rye crumb oven tea leaf steep kettle "
    "porcelain report revenue quarter margin incident outage pager rollback queue worker lease retry",
)


def documents(count: int, words: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"id": f"doc-{i:05d}", "text": " ".join(rng.choice(WORDS) for _ in range(words)) + "."}
        for i in range(count)
    ]


def planned_calls(docs: list[dict[str, str]], chunk_tokens: int, overlap: int) -> list[list[str]]:
    """The chunks' texts grouped as llmqueue groups them into calls."""
    pieces = [
        (f"{d['id']}#{n}", c.text)
        for d in docs
        for n, c in enumerate(chunk_text(d["text"], chunk_tokens, overlap))
    ]
    model = get_catalog().model(MODEL)
    assert model is not None
    return [call.texts for call in plan_calls(embedding_inputs(pieces), model)]


async def bare(url: str, calls: list[list[str]], dimensions: int) -> dict[str, Any]:
    client = openai.AsyncOpenAI(
        api_key="emulator-key-not-secret",
        base_url=url.rstrip("/") + "/openai/v1",
        max_retries=0,
        timeout=300,
        http_client=openai.DefaultAioHttpClient(timeout=300),
    )
    await client.embeddings.create(model=MODEL, input=["warm up"], dimensions=dimensions)
    cpu0, t0 = time.process_time(), time.perf_counter()
    answers = await asyncio.gather(
        *(client.embeddings.create(model=MODEL, input=texts, dimensions=dimensions) for texts in calls)
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await client.close()
    chunks = sum(len(a.data) for a in answers)
    assert chunks == sum(len(c) for c in calls)
    return {"chunks": chunks, "calls": len(calls), "wall_s": wall, "cpu_s": cpu}


def submit(
    stack: PipelineStack, key: str, docs: list[dict[str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    body = "\n".join(json.dumps(d) for d in docs).encode()
    form = {
        "mode": "embed",
        "model": MODEL,
        "chunk_tokens": str(args.chunk_tokens),
        "overlap_tokens": str(args.overlap),
        "dimensions": str(args.dimensions),
    }
    r = httpx.post(
        f"{stack.api_url}/v1/document_batches",
        headers={"Authorization": f"Bearer {key}"},
        data=form,
        files={"jsonl": ("docs.jsonl", body, "application/x-ndjson")},
        timeout=600,
    )
    r.raise_for_status()
    batch: dict[str, Any] = r.json()
    return batch


def wait(stack: PipelineStack, key: str, batch_id: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        while True:
            batch: dict[str, Any] = http.get(f"/v1/document_batches/{batch_id}").json()
            if batch["status"] in ("completed", "cancelled", "failed"):
                return batch
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} still {batch['status']}")
            stack.check_alive()
            time.sleep(0.05)


def read_back(stack: PipelineStack, key: str, batch_id: str) -> int:
    rows = 0
    params = {"encoding_format": "base64"}
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.stream(
        "GET",
        f"{stack.api_url}/v1/document_batches/{batch_id}/results",
        params=params,
        headers=headers,
        timeout=600,
    ) as r:
        for line in r.iter_lines():
            if line.strip():
                rows += 1
    return rows


def through_llmqueue(
    stack: PipelineStack, docs: list[dict[str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    warm = submit(stack, stack.warmup_key, docs[:2], args)  # builds the SDK clients, fills the pools
    wait(stack, stack.warmup_key, warm["id"])
    meter = CpuMeter({c.name: c.pid for c in stack.children()})
    meter.start()
    t0 = time.perf_counter()
    batch = submit(stack, stack.key, docs, args)
    accepted = time.perf_counter() - t0
    final = wait(stack, stack.key, batch["id"])
    stored = time.perf_counter() - t0
    stored_cpu = dict(meter.stop())
    meter.start()
    t1 = time.perf_counter()
    rows = read_back(stack, stack.key, batch["id"])
    read = time.perf_counter() - t1
    read_cpu = meter.stop()
    assert final["status"] == "completed" and final["counts"]["failed"] == 0, final["counts"]
    assert rows == final["options"]["chunks"]
    return {
        "chunks": rows,
        "calls": final["options"]["calls"],
        "accepted_s": accepted,
        "stored_s": stored,
        "read_s": read,
        "stored_cpu_s": stored_cpu,
        "read_cpu_s": dict(read_cpu),
        "cost_usd": final["cost_usd"],
    }


def one_run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    docs = documents(args.documents, args.words)
    calls = planned_calls(docs, args.chunk_tokens, args.overlap)
    emulator = Emulator(log_dir)
    try:
        emulator.configure(latency_ms=args.latency_ms)
        base = asyncio.run(bare(emulator.url, calls, args.dimensions))
        with PipelineStack(emulator.url, StackOptions(provider_concurrency=200), log_dir) as stack:
            lq = through_llmqueue(stack, docs, args)
    finally:
        emulator.stop()
    assert lq["calls"] == base["calls"] and lq["chunks"] == base["chunks"]
    n = base["chunks"]
    stored_cpu = sum(lq["stored_cpu_s"].values())
    read_cpu = sum(lq["read_cpu_s"].values())
    return {
        "chunks": n,
        "calls": base["calls"],
        "bare": {"chunks_per_s": n / base["wall_s"], "cpu_ms_per_1k": base["cpu_s"] * 1e6 / n, **base},
        "llmqueue": {
            "stored_chunks_per_s": n / lq["stored_s"],
            "read_chunks_per_s": n / (lq["stored_s"] + lq["read_s"]),
            "stored_cpu_ms_per_1k": stored_cpu * 1e6 / n,
            "read_cpu_ms_per_1k": read_cpu * 1e6 / n,
            "cpu_ms_per_1k_by_process": {k: v * 1e6 / n for k, v in lq["stored_cpu_s"].items()},
            **lq,
        },
        "stored_wall_ratio": lq["stored_s"] / base["wall_s"],
        "stored_cpu_ratio": stored_cpu / base["cpu_s"] if base["cpu_s"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--words", type=int, default=5000, help="Words per document.")
    parser.add_argument("--chunk-tokens", type=int, default=50)
    parser.add_argument("--overlap", type=int, default=0)
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="llmq-bench-embed-") as tmp:
        for i in range(args.repeat):
            run = one_run(args, Path(tmp))
            runs.append(run)
            bare_, lq = run["bare"], run["llmqueue"]
            print(
                f"run {i + 1}: {run['chunks']} chunks in {run['calls']} calls | "
                f"bare {bare_['chunks_per_s']:.0f} chunks/s, {bare_['cpu_ms_per_1k']:.0f} CPU ms/1k | "
                f"llmqueue stored {lq['stored_chunks_per_s']:.0f} chunks/s, "
                f"{lq['stored_cpu_ms_per_1k']:.0f} CPU ms/1k; with read-back "
                f"{lq['read_chunks_per_s']:.0f} chunks/s, +{lq['read_cpu_ms_per_1k']:.0f} CPU ms/1k",
                flush=True,
            )
    summary = {
        "when": datetime.now(UTC).isoformat(),
        "machine": platform.platform(),
        "args": vars(args),
        "median": {
            key: statistics.median(r[side][key] for r in runs)
            for side, keys in (
                ("bare", ("chunks_per_s", "cpu_ms_per_1k")),
                (
                    "llmqueue",
                    (
                        "stored_chunks_per_s",
                        "read_chunks_per_s",
                        "stored_cpu_ms_per_1k",
                        "read_cpu_ms_per_1k",
                    ),
                ),
            )
            for key in keys
        },
        "runs": runs,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"embeddings-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps(summary["median"], indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
