"""Shared helpers for the provider adapter tests (tests/providers/test_*.py).

This module owns the scaffolding every adapter test repeats, so each test file keeps only what is
specific to its provider (its deployment, assertions, error-case table and SDK-level unit checks);
what every adapter must do is checked once for all of them, in `test_conformance.py`:

- building an adapter aimed at the emulator: `deployment` (a shipped catalog deployment, or
  `compatible_deployment`, since the shipped catalog has no OpenAI-compatible endpoint),
  `emulated_target`, `emulated`;
- running one call to its end and closing the adapter: `run` + async `complete`, or the
  synchronous `complete_fresh` that builds the adapter inside the event loop;
- the default request builder `req` (prompt `PROMPT`) and the shared `TOOLS` definition;
- the streaming sinks: `Collector` (keeps deltas), `discard` and `no_text_expected`;
- the parametrized error-mapping check `raises_mapped`;
- the tool round trip every adapter must pass: `tool_round_trip`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from core.types import ChatRequest, ChatResponse, FinishReason, ToolCall
from routing.catalog import Deployment, catalog_from_dict, get_catalog
from workers.providers import errors
from workers.providers.base import Provider, Target, TextSink, resolve_target

T = TypeVar("T")
P = TypeVar("P", bound=Provider)

PROMPT = "Tell me about the sea"
REFUSED_URL = "http://127.0.0.1:9"  # nothing listens here: the connection is refused

TOOLS: list[dict[str, Any]] = [
    {
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    }
]


def deployment(name: str) -> Deployment:
    """The catalog deployment called `name`; it must exist."""
    dep = get_catalog().deployment(name)
    assert dep is not None
    return dep


# An OpenAI-compatible endpoint (vLLM here): its adapter requires a base_url.
COMPATIBLE_CATALOG = catalog_from_dict(
    {
        "models": [
            {
                "id": "qwen2.5-7b",
                "provider": "compatible",
                "context_window": 32768,
                "max_output_tokens": 4096,
                "input_price": 0,
                "output_price": 0,
                "quality": 40,
                "capabilities": ["tools", "json_mode"],
            }
        ],
        "deployments": [{"name": "vllm/qwen", "model": "qwen2.5-7b", "base_url": "http://localhost:8000/v1"}],
    }
)


def compatible_deployment() -> Deployment:
    """The OpenAI-compatible deployment of COMPATIBLE_CATALOG."""
    dep = COMPATIBLE_CATALOG.deployment("vllm/qwen")
    assert dep is not None
    return dep


def emulated_target(dep: Deployment | str, url: str, timeout_s: float | None = None) -> Target:
    """A target that always sends `dep`'s calls to the emulator at `url`."""
    if isinstance(dep, str):
        dep = deployment(dep)
    if timeout_s is None:
        return resolve_target(dep, emulator_url=url, emulator_mode="always")
    return resolve_target(dep, emulator_url=url, emulator_mode="always", timeout_s=timeout_s)


def emulated(cls: type[P], dep: Deployment | str, url: str, timeout_s: float | None = None) -> P:
    """An adapter of class `cls` for `dep`, aimed at the emulator at `url`."""
    return cls(emulated_target(dep, url, timeout_s))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def complete(p: Provider, request: ChatRequest, sink: TextSink | None = None) -> ChatResponse:
    """One call through `p` (streamed to `sink` if given); `p` is closed afterwards."""
    try:
        return await p.complete(request, on_text=sink)
    finally:
        await p.aclose()


def complete_fresh(
    make: Callable[[], Provider], request: ChatRequest, sink: TextSink | None = None
) -> ChatResponse:
    """Like `run(complete(...))`, but the adapter is built by `make` inside the event loop."""

    async def go() -> ChatResponse:
        return await complete(make(), request, sink)

    return asyncio.run(go())


def req(**kw: Any) -> ChatRequest:
    """A chat request; without `messages`, a single user turn saying PROMPT."""
    kw.setdefault("messages", [{"role": "user", "content": PROMPT}])
    return ChatRequest.model_validate(kw)


class Collector:
    """A text sink that keeps every delta it is handed."""

    def __init__(self) -> None:
        self.deltas: list[str] = []

    async def __call__(self, delta: str) -> None:
        self.deltas.append(delta)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


async def discard(delta: str) -> None:
    """A text sink that ignores what it is handed (to make a call stream)."""


async def no_text_expected(delta: str) -> None:
    """A text sink for calls that must stream no text (a tool call)."""
    raise AssertionError("a tool call streams no text")


def raises_mapped(
    script: dict[str, Any],
    expected: type[errors.ProviderError],
    call: Callable[[], object],
    *,
    exact_type: bool = True,
) -> errors.ProviderError:
    """Check that `call`, with the emulator scripted by `script`, raises `expected`.

    Also checks the exact class (unless `exact_type` is false), the scripted retry_after of a
    rate limit, and that the scripted message is carried; returns the error for further checks.
    """
    with pytest.raises(expected) as info:
        call()
    err = info.value
    if exact_type:
        assert type(err) is expected
    if expected is errors.RateLimited and "retry_after" in script:
        assert err.retry_after == script["retry_after"]
    if script.get("message"):
        assert script["message"] in err.message
    return err


def tool_round_trip(call: Callable[[ChatRequest], ChatResponse], **first: Any) -> ToolCall:
    """The model asks for `get_weather`; the tool's answer goes back in a second call, whose
    reply uses it. `call` makes one call to the adapter under test; `first` adds request
    fields to the first call. Returns the tool call, for provider-specific checks."""
    asked = call(req(tools=TOOLS, **first))
    assert asked.finish_reason is FinishReason.TOOL_CALLS
    tool_call = asked.tool_calls[0]
    assert tool_call.id
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "example"}
    answered = call(
        req(
            tools=TOOLS,
            messages=[
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "tool_calls": [tool_call.model_dump()]},
                {"role": "tool", "tool_call_id": tool_call.id, "content": "sunny, 21C"},
            ],
        )
    )
    assert answered.finish_reason is FinishReason.STOP
    assert "sunny, 21C" in answered.text
    return tool_call
