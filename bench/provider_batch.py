"""Cost and wall time of the two paths for one set of documents: online calls through a
provider's adapter, or one provider batch through its batch client (issue 15's clients, before
the orchestration that will choose between them).

    python -m bench.provider_batch [--docs 5000] [--provider openai] [--concurrency 100]
                                   [--completion-s 0]

The emulator runs as its own process. Both paths send the same requests; cost is each
answer's usage at the catalog's online prices, and at its batch prices for the batch path.
Against the emulator, `--completion-s 0` makes the batch path's wall time llmqueue's own
overhead (building and uploading the input, polling, reading the results); a real provider
adds its turnaround, most often minutes, at most its 24-hour window.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from decimal import Decimal

import httpx

from core.types import ChatRequest
from emulator.server import free_port
from routing.catalog import Deployment, get_catalog
from routing.costs import settle_batch_cost, settle_cost
from workers.providers import adapter_class
from workers.providers.base import resolve_target
from workers.providers.batch_base import BatchLine, LineOutcome, batch_client_class

DEPLOYMENTS = {
    "openai": "openai/gpt-4o-mini",
    "azure": "azure/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
    "mistral": "mistral/mistral-small",
}


def documents(count: int) -> list[ChatRequest]:
    """Summarisation prompts of a few hundred words each, all different."""
    return [
        ChatRequest.model_validate(
            {
                "messages": [
                    {"role": "system", "content": "Summarise the document in two sentences."},
                    {
                        "role": "user",
                        "content": f"Document {i}: "
                        + " ".join(f"word{(i * 7 + j) % 997}" for j in range(300)),
                    },
                ],
                "max_tokens": 120,
            }
        )
        for i in range(count)
    ]


async def online(dep: Deployment, url: str, requests: list[ChatRequest], concurrency: int) -> Decimal:
    adapter = adapter_class(dep.provider)(resolve_target(dep, emulator_url=url, emulator_mode="always"))
    gate = asyncio.Semaphore(concurrency)
    total = Decimal(0)

    async def one(request: ChatRequest) -> None:
        nonlocal total
        async with gate:
            answer = await adapter.complete(request)
        total += settle_cost(dep.model, answer.usage)

    try:
        await asyncio.gather(*(one(r) for r in requests))
    finally:
        await adapter.aclose()
    return total


async def by_batch(dep: Deployment, url: str, requests: list[ChatRequest]) -> tuple[Decimal, int]:
    target = resolve_target(dep, emulator_url=url, emulator_mode="always", timeout_s=600)
    client = batch_client_class(dep.provider)(target)
    total = Decimal(0)
    answered = 0
    try:
        ref = await client.submit(
            [BatchLine(f"doc{i}", r, dep) for i, r in enumerate(requests)], label="bench"
        )
        while not (await client.poll(ref)).terminal:
            await asyncio.sleep(0.2)
        async for result in client.results(ref):
            if result.outcome is LineOutcome.SUCCEEDED and result.response is not None:
                answered += 1
                total += settle_batch_cost(dep.model, result.response.usage)
    finally:
        await client.aclose()
    return total, answered


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--provider", choices=sorted(DEPLOYMENTS), default="openai")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--completion-s", type=float, default=0.0)
    args = parser.parse_args()
    dep = get_catalog().deployment(DEPLOYMENTS[args.provider])
    assert dep is not None
    port = free_port()
    code = f"from emulator.server import serve; serve(port={port})"
    emulator = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/_emulator/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        config = {"batch": {"completion_s": args.completion_s}}
        httpx.post(f"{url}/_emulator/config", json=config).raise_for_status()
        requests = documents(args.docs)
        started = time.perf_counter()
        online_cost = asyncio.run(online(dep, url, requests, args.concurrency))
        online_s = time.perf_counter() - started
        started = time.perf_counter()
        batch_cost, answered = asyncio.run(by_batch(dep, url, requests))
        batch_s = time.perf_counter() - started
    finally:
        emulator.terminate()
        emulator.wait(10)
    print(f"{args.docs} documents, {dep.name}, emulator completion_s={args.completion_s}")
    print(f"online:         ${online_cost:.4f}  {online_s:6.1f} s  ({args.concurrency} calls in flight)")
    print(f"provider batch: ${batch_cost:.4f}  {batch_s:6.1f} s  ({answered} lines answered)")
    print(f"batch / online: {batch_cost / online_cost:.1%} of the cost")


if __name__ == "__main__":
    main()
