"""Shared helpers for the emulator's batch API tests (tests/emulator/test_batch_*.py).

Official SDK clients aimed at the emulator with a dummy key, the batch configuration call,
JSONL input builders, result readers, a poll-until helper and the control surface's views
(the batches' state and the batch operations in the call log).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import httpx
import openai
from google import genai
from google.genai import types
from mistralai.client import Mistral

from tests.conftest import EmulatorHandle
from workers.providers.base import EMULATOR_KEY

T = TypeVar("T")
AZURE_API_VERSION = "2024-10-21"
CHAT_URL = "/v1/chat/completions"


def configure_batches(emulator: EmulatorHandle, seed: int = 0, **settings: Any) -> None:
    """The emulator's batch settings (`BatchConfig` fields) for this test."""
    r = httpx.post(f"{emulator.url}/_emulator/config", json={"seed": seed, "batch": settings})
    r.raise_for_status()


def openai_client(emulator: EmulatorHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{emulator.url}/openai/v1", api_key=EMULATOR_KEY, max_retries=0)


def azure_client(emulator: EmulatorHandle) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=f"{emulator.url}/azure",
        api_key=EMULATOR_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )


def anthropic_client(emulator: EmulatorHandle) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{emulator.url}/anthropic", api_key=EMULATOR_KEY, max_retries=0)


def gemini_client(emulator: EmulatorHandle) -> genai.Client:
    options = types.HttpOptions(
        base_url=f"{emulator.url}/gemini",
        api_version="v1beta",
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    return genai.Client(api_key=EMULATOR_KEY, vertexai=False, http_options=options)


def mistral_client(emulator: EmulatorHandle) -> Mistral:
    return Mistral(api_key=EMULATOR_KEY, server_url=f"{emulator.url}/mistral")


def chat_line(custom_id: str, model: str = "gpt-4o-mini", url: str = CHAT_URL, **body: Any) -> dict[str, Any]:
    body.setdefault("messages", [{"role": "user", "content": f"question number {custom_id}"}])
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": model, **body}}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def upload(client: openai.OpenAI, data: bytes, name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, data), purpose="batch").id


def by_custom_id(text: str) -> dict[str, dict[str, Any]]:
    """The rows of a JSONL result file, keyed by custom_id (each must appear once)."""
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    keyed = {row["custom_id"]: row for row in rows}
    assert len(keyed) == len(rows), "a custom_id appears twice in a result file"
    return keyed


def wait_until(fetch: Callable[[], T], done: Callable[[T], bool], timeout_s: float = 10) -> T:
    """Calls `fetch` every 50 ms until `done` holds for its result; fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not done after {timeout_s} s: {value!r}")
        time.sleep(0.05)


def control_batches(emulator: EmulatorHandle, provider: str | None = None) -> list[dict[str, Any]]:
    params = {"provider": provider} if provider else {}
    r = httpx.get(f"{emulator.url}/_emulator/batches", params=params)
    r.raise_for_status()
    rows: list[dict[str, Any]] = r.json()
    return rows


def control_batch(emulator: EmulatorHandle, batch_id: str) -> dict[str, Any]:
    return next(row for row in control_batches(emulator) if row["id"] == batch_id)


def finish_now(emulator: EmulatorHandle, batch_id: str, action: str = "complete") -> dict[str, Any]:
    r = httpx.post(f"{emulator.url}/_emulator/batches/{batch_id}/{action}")
    r.raise_for_status()
    row: dict[str, Any] = r.json()
    return row


def batch_calls(emulator: EmulatorHandle, kind: str, batch_id: str | None = None) -> list[dict[str, Any]]:
    """The batch operations of `kind` in the call log (of one batch, if given)."""
    return [
        c
        for c in emulator.calls(scope="batch")
        if c["kind"] == kind and (batch_id is None or c["batch_id"] == batch_id)
    ]
