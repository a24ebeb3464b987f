"""Shared helpers for the provider-batch client tests (tests/providers/test_batch_*.py).

One deployment per provider with a batch API, clients built exactly as a worker builds them
(`resolve_target` aimed at the emulator, `batch_client_class`), line builders, and the async
loops that poll a batch to its end and collect its results (each custom_id at most once).
Clients hold aiohttp sessions, so each test builds its client inside the event loop `run`
starts, with `using_client`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.types import ChatRequest
from routing.catalog import Deployment, get_catalog
from workers.providers.base import resolve_target
from workers.providers.batch_base import (
    BatchLine,
    BatchLineResult,
    ProviderBatchClient,
    ProviderBatchRef,
    ProviderBatchStatus,
    batch_client_class,
)

T = TypeVar("T")

DEPLOYMENTS = {
    "openai": "openai/gpt-4o-mini",
    "azure": "azure/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
    "mistral": "mistral/mistral-small",
}
PROVIDERS = sorted(DEPLOYMENTS)


def deployment(provider: str) -> Deployment:
    dep = get_catalog().deployment(DEPLOYMENTS[provider])
    assert dep is not None
    return dep


def batch_client(provider: str, url: str) -> ProviderBatchClient:
    dep = deployment(provider)
    return batch_client_class(dep.provider)(resolve_target(dep, emulator_url=url, emulator_mode="always"))


def using_client(provider: str, url: str, body: Callable[[ProviderBatchClient], Awaitable[T]]) -> T:
    """Runs `body` with a fresh client in a fresh event loop, and closes the client."""

    async def go() -> T:
        client = batch_client(provider, url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(go())


def request(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": text}], **fields})


def lines(provider: str, count: int, prefix: str = "l", **fields: Any) -> list[BatchLine]:
    dep = deployment(provider)
    return [
        BatchLine(f"{prefix}{i}", request(f"question number {prefix}{i}", **fields), dep)
        for i in range(count)
    ]


async def until_ended(
    client: ProviderBatchClient, ref: ProviderBatchRef, timeout_s: float = 20
) -> tuple[ProviderBatchStatus, list[str]]:
    """Polls every 50 ms until the batch ends; returns its last status and the states seen in order."""
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while True:
        status = await client.poll(ref)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        if status.terminal:
            return status, seen
        assert time.monotonic() < deadline, f"batch {ref.batch_id} still {status.state} after {timeout_s} s"
        await asyncio.sleep(0.05)


async def collect(client: ProviderBatchClient, ref: ProviderBatchRef) -> dict[str, BatchLineResult]:
    """Every result of an ended batch, by custom_id; a custom_id reported twice fails the test."""
    found: dict[str, BatchLineResult] = {}
    async for result in client.results(ref):
        assert result.custom_id not in found, f"{result.custom_id} reported twice"
        found[result.custom_id] = result
    return found


def control_id(ref: ProviderBatchRef) -> str:
    """The batch's id in the emulator's control surface (Gemini's names are `batches/<id>`)."""
    return ref.batch_id.removeprefix("batches/")
