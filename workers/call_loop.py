"""One asyncio event loop per worker process, on its own thread, for every provider call.

Celery's thread pool gives each task a thread that blocks; the calls themselves run
concurrently on this loop with async SDK clients, built once per deployment and reused
(building a client costs ~20 ms of CPU; one shared sync client starves on its pool).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from core.settings import Settings
from core.types import ChatRequest, ChatResponse
from routing.catalog import Deployment
from workers.providers import adapter_class
from workers.providers.base import Provider, resolve_target

T = TypeVar("T")


class CallLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._adapters: dict[str, Provider] = {}
        self.emulated: dict[str, bool] = {}  # deployment -> its calls go to the built-in emulator
        self._lock = asyncio.Lock()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="llmqueue-calls", daemon=True)
        self._thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine on the loop without waiting for it (its errors are its own to handle)."""
        asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a coroutine on the loop and wait for it from the calling thread; on timeout the
        coroutine is cancelled and concurrent.futures.TimeoutError raised."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    async def adapter(
        self, deployment: Deployment, *, emulator_url: str | None, emulator_mode: str, timeout_s: float
    ) -> Provider:
        """The deployment's adapter, built on first use (on the loop, as aiohttp requires)."""
        found = self._adapters.get(deployment.name)
        if found is not None:
            return found
        async with self._lock:
            found = self._adapters.get(deployment.name)
            if found is None:
                cls = adapter_class(deployment.provider)
                target = resolve_target(
                    deployment,
                    emulator_url=emulator_url,
                    emulator_mode=emulator_mode,
                    timeout_s=timeout_s,
                )
                found = cls(target)
                self._adapters[deployment.name] = found
                self.emulated[deployment.name] = target.emulated
        return found


async def prewarm(loop: CallLoop, deployments: list[Deployment], **resolve: Any) -> list[str]:
    """Build the adapters of these deployments now, not on their first call.

    Importing an SDK and building its client takes from a few hundred ms to seconds
    (google-genai, boto3); paid on the first call, it stalls every job that arrives
    meanwhile, and most of all the failovers that land on a deployment for the first time.
    Returns the deployments that could not be built (a missing key, say), which are left
    to fail on their first call with the proper error."""
    failed: list[str] = []
    for deployment in deployments:
        try:
            await loop.adapter(deployment, **resolve)
        except Exception:
            failed.append(deployment.name)
    return failed


_loop: CallLoop | None = None
_loop_lock = threading.Lock()


def get_call_loop() -> CallLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = CallLoop()
        return _loop


def call_once(deployment: Deployment, request: ChatRequest, settings: Settings) -> ChatResponse:
    """One call through the deployment's adapter, waited for from this (non-loop) thread;
    raises the adapter's ProviderError, or concurrent.futures.TimeoutError."""
    loop = get_call_loop()

    async def go() -> ChatResponse:
        adapter = await loop.adapter(
            deployment,
            emulator_url=settings.emulator_url,
            emulator_mode=settings.emulator_mode,
            timeout_s=settings.provider_timeout_s,
        )
        return await adapter.complete(request)

    return loop.run(go(), timeout=settings.provider_timeout_s + 5)
