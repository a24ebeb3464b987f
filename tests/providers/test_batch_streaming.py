"""Large results are streamed: reading several megabytes of a provider batch's results holds a
small fraction of them in memory at any moment.

The emulator runs in its own process here, so that only the client's memory is measured
(`tracemalloc` traces this process): results are read from the HTTP response as it arrives,
line by line, never downloaded whole. Gemini's answers come inline with the job (its batches
are at most 20 MB of requests), so it is not among these.
"""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest

from emulator.server import free_port
from tests.providers.batch_support import lines, until_ended, using_client
from workers.providers.batch_base import LineOutcome, ProviderBatchClient

LINES = 2000
# 24 long words: the emulator's answer quotes them, so each result line is over 7 kB.
WORDS = " ".join(f"{'w' * 296}{i:04d}" for i in range(24))


@pytest.fixture(scope="module")
def emulator_process() -> Iterator[str]:
    port = free_port()
    code = f"from emulator.server import serve; serve(port={port})"
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/_emulator/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "the emulator did not start"
            time.sleep(0.1)
        httpx.post(f"{url}/_emulator/config", json={"batch": {"completion_s": 0}}).raise_for_status()
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("provider", ["openai", "azure", "anthropic", "mistral"])
def test_large_results_are_read_as_they_stream(emulator_process: str, provider: str) -> None:
    batch = lines(provider, LINES)
    batch = [
        line.__class__(line.custom_id, line.request.model_copy(deep=True), line.deployment) for line in batch
    ]
    for line in batch:
        line.request.messages[0].content = f"{line.custom_id} {WORDS}"

    async def body(client: ProviderBatchClient) -> tuple[int, int, int]:
        ref = await client.submit(batch)
        await until_ended(client, ref, timeout_s=120)
        text_bytes = answered = 0
        tracemalloc.start()
        try:
            async for result in client.results(ref):
                assert result.outcome is LineOutcome.SUCCEEDED and result.response is not None
                answered += 1
                text_bytes += len(result.response.text)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return answered, text_bytes, peak

    answered, text_bytes, peak = using_client(provider, emulator_process, body)
    assert answered == LINES
    assert text_bytes > 13_000_000  # the answers' text alone; the result files are larger still
    # Read whole, the results would need more than their size at once; streamed, a few chunks
    # (and the custom_ids seen, to report each once).
    assert peak < text_bytes / 8, f"{peak} bytes held at the peak while reading {text_bytes} bytes of text"
