"""The LiteLLM baseline: the same N chat completions through LiteLLM's `Router` (in-process,
nothing durable), for comparison with the pipeline and the bare client.

LiteLLM is never a dependency of llmqueue: this script runs in its own virtual environment,
`bench/.venv-litellm` (`make bench-litellm` creates it and runs the pipeline benchmark with
this baseline; `python -m bench.pipeline --litellm` uses it when it exists). It imports only
the standard library, LiteLLM and `bench.baseline`'s request shape.

    bench/.venv-litellm/bin/python -m bench.litellm_baseline --url http://127.0.0.1:8765 --jobs 2000

It prints one JSON object like `bench.baseline`'s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: no price list fetch
os.environ.setdefault("LITELLM_LOG", "ERROR")

from litellm import Router  # after the environment above: LiteLLM reads it at import

from bench.baseline import MAX_TOKENS, MODEL, cli, messages, summary


async def run(url: str, jobs: int, concurrency: int) -> dict[str, Any]:
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    router = Router(
        model_list=[
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": url.rstrip("/") + "/openai/v1",
                    "api_key": "emulator-key-not-secret",
                    "timeout": 120,
                },
            }
        ],
        num_retries=0,
    )
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with gate:
            started = time.perf_counter()
            try:
                await router.acompletion(model=MODEL, messages=messages(i), max_tokens=MAX_TOKENS)
            except Exception:
                failures += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)

    await one(-1)  # warm-up: clients built, connections open
    latencies.clear()
    failures = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return summary(jobs, concurrency, latencies, failures, wall, cpu)


if __name__ == "__main__":
    cli(run, __doc__)
