"""The emulator's behaviour, shared by every wire format: answers, usage, latency and faults.

Each wire-format module (`openai_format.py`, ...) parses its provider's request into a
`Conversation`, asks `Emulator.begin_call` whether this call should fail (an outage, an error
rate, a rate limit, or a scripted response the test queued) after the configured latency,
and renders `Emulator.answer`'s deterministic `Answer` in its own response shape.

Faults are configured per scope: a model name, a provider name, or "*" for everything;
the most specific scope that is configured wins. `POST /_emulator/config` sets them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from emulator.batch_config import BatchConfig


class ScriptedResponse(BaseModel):
    """One queued outcome: an error status (with code, message, Retry-After) or `ok`."""

    status: int = 200
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    latency_ms: float | None = None


class ScopeConfig(BaseModel):
    latency_ms: float = 0
    stream_chunk_ms: float = 0
    error_rate: float = Field(default=0, ge=0, le=1)
    outage: bool = False
    rpm: int | None = None  # requests per rolling minute before answering 429
    script: list[ScriptedResponse] = Field(default_factory=list)


class EmulatorConfig(BaseModel):
    scopes: dict[str, ScopeConfig] = Field(default_factory=dict)
    seed: int = 0
    batch: BatchConfig = Field(default_factory=BatchConfig)  # the batch APIs (emulator/batch_*.py)


@dataclass
class Fault:
    status: int
    code: str
    message: str
    retry_after: float | None = None


@dataclass
class Conversation:
    """A request reduced to what the emulator's answer depends on."""

    model: str
    texts: list[tuple[str, str]]  # (role, text) in order
    tools: list[dict[str, Any]] = field(default_factory=list)  # {"name", "parameters"}
    tool_choice_none: bool = False
    last_is_tool_result: bool = False
    json_mode: bool = False
    json_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    images: int = 0


@dataclass
class Answer:
    text: str
    tool_calls: list[tuple[str, str, str]]  # (id, name, arguments JSON)
    finish_reason: str  # "stop" | "length" | "tool_calls"
    input_tokens: int
    output_tokens: int
    request_id: str

    def chunks(self) -> list[str]:
        """The text in the pieces a stream sends: one word (and its space) each."""
        words = self.text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


def count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _example_for(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: _example_for(sub) for name, sub in props.items()}
    if kind == "array":
        return [_example_for(schema.get("items", {"type": "string"}))]
    if kind in ("integer", "number"):
        return 42
    if kind == "boolean":
        return True
    if "enum" in schema:
        return schema["enum"][0]
    return "example"


class Emulator:
    """Process-wide emulator state: config, call log, rate-limit windows."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.calls: list[dict[str, Any]] = []
        self._windows: dict[str, deque[float]] = {}
        self._random = random.Random(self.config.seed)
        self._counter = 0

    def configure(self, config: EmulatorConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        self._windows.clear()

    def reset(self) -> None:
        self.configure(EmulatorConfig())
        self.calls.clear()

    def scope_for(self, provider: str, model: str) -> tuple[str, ScopeConfig]:
        for key in (model, provider, "*"):
            if key in self.config.scopes:
                return key, self.config.scopes[key]
        return "*", ScopeConfig()

    async def begin_call(self, provider: str, model: str) -> tuple[Fault | None, ScopeConfig]:
        """Wait out the latency and decide this call's fate. Records the call."""
        key, scope = self.scope_for(provider, model)
        scripted = scope.script.pop(0) if scope.script else None
        latency = scripted.latency_ms if scripted and scripted.latency_ms is not None else scope.latency_ms
        fault = self._decide(key, scope, scripted)
        self.calls.append(
            {
                "t": time.time(),
                "provider": provider,
                "model": model,
                "scope": key,
                "status": fault.status if fault else 200,
            }
        )
        if latency > 0 and not (fault and fault.status in (429, 503) and scripted is None):
            await asyncio.sleep(latency / 1000)
        return fault, scope

    def _decide(self, key: str, scope: ScopeConfig, scripted: ScriptedResponse | None) -> Fault | None:
        if scripted is not None:
            if scripted.status == 200:
                return None
            return Fault(
                scripted.status,
                scripted.code or _default_code(scripted.status),
                scripted.message or f"emulated error {scripted.status}",
                scripted.retry_after,
            )
        if scope.outage:
            return Fault(503, "service_unavailable", "emulated outage: the service is unavailable")
        if scope.rpm is not None:
            now = time.monotonic()
            window = self._windows.setdefault(key, deque())
            while window and now - window[0] >= 60:
                window.popleft()
            if len(window) >= scope.rpm:
                wait = max(0.001, 60 - (now - window[0]))
                return Fault(
                    429, "rate_limit_exceeded", f"emulated rate limit of {scope.rpm} rpm", round(wait, 3)
                )
            window.append(now)
        if scope.error_rate and self._random.random() < scope.error_rate:
            return Fault(500, "server_error", "emulated internal error")
        return None

    def answer(self, conv: Conversation) -> Answer:
        """The deterministic answer to a conversation."""
        self._counter += 1
        prompt = "\n".join(text for _, text in conv.texts)
        digest = hashlib.sha256(f"{conv.model}\n{prompt}".encode()).hexdigest()
        request_id = f"emu-{digest[:12]}-{self._counter}"
        input_tokens = sum(count_tokens(t) + 4 for _, t in conv.texts) + 85 * conv.images
        if conv.tools and not conv.tool_choice_none and not conv.last_is_tool_result:
            tool = conv.tools[0]
            args = json.dumps(_example_for(tool.get("parameters") or {}))
            call = (f"call_{digest[:16]}", str(tool["name"]), args)
            return Answer("", [call], "tool_calls", input_tokens, count_tokens(args) + 8, request_id)
        last_user = next((t for r, t in reversed(conv.texts) if r in ("user", "tool")), "")
        words = last_user.split()
        gist = " ".join(words[:24]) + (" ..." if len(words) > 24 else "")
        if conv.last_is_tool_result:
            text = f"Based on the tool result: {gist}"
        else:
            text = f"[emulated {conv.model}] Summary ({len(words)} words, ref {digest[:8]}): {gist}"
        if conv.json_schema is not None:
            text = json.dumps(_example_for(conv.json_schema))
        elif conv.json_mode:
            text = json.dumps({"answer": text, "model": conv.model})
        finish = "stop"
        out_tokens = count_tokens(text)
        if conv.max_tokens is not None and out_tokens > conv.max_tokens:
            text = text[: conv.max_tokens * 4]
            out_tokens = conv.max_tokens
            finish = "length"
        return Answer(text, [], finish, input_tokens, out_tokens, request_id)


def _default_code(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "invalid_api_key",
        403: "permission_denied",
        404: "not_found",
        429: "rate_limit_exceeded",
        500: "server_error",
        503: "service_unavailable",
        529: "overloaded_error",
    }.get(status, "error")
