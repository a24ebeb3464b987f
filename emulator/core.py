"""The emulator's behaviour, shared by every wire format: answers, usage, latency and faults.

Each wire-format module (`openai_format.py`, ...) parses its provider's request into a
`Conversation`, enters `Emulator.call` to learn whether this call should fail (an outage, an
error rate, a rate or concurrency limit, or a scripted response the test queued) after the
configured latency, and renders `Emulator.answer`'s deterministic `Answer` in its own response
shape. The embedding routes (`*_embed.py`) go through the same `Emulator.call`.

Faults and limits are configured per scope: a model name, a provider name, or "*" for
everything; the most specific scope that is configured wins. `POST /_emulator/config` sets
them. Every call is recorded in `Emulator.calls` (served at `GET /_emulator/calls`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from emulator.batch_config import BatchConfig
from emulator.limits import Limiter, RateState


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
    # An outage that starts part-way: the first `outage_after` calls in this scope are served
    # as usual, every later one gets the outage's 503 (the demo's failing provider).
    outage_after: int | None = Field(default=None, ge=0)
    rpm: int | None = Field(default=None, ge=1)  # calls admitted per rolling minute; beyond, 429
    # Tokens admitted per rolling minute: a chat call weighs its input tokens plus its max_tokens
    # (its answer's output tokens without one), an embedding call its input tokens.
    tpm: int | None = Field(default=None, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)  # calls in flight at once; beyond, 429
    # False: answers carry no rate-limit headers (retry-after on a 429 stays), to test a client
    # against a provider that does not report its limits.
    rate_limit_headers: bool = True
    # Every answer in the scope is this text instead of the composed one (tool calls and JSON
    # modes aside): a test's way to make a model say what a store may not keep as it is (a NUL
    # character, an unpaired surrogate).
    answer_text: str | None = None
    script: list[ScriptedResponse] = Field(default_factory=list)

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.max_concurrency is not None


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
class Call:
    """One call's fate, as `Emulator.call` decided it."""

    fault: Fault | None
    scope: ScopeConfig
    rate: RateState | None  # None when the scope sets no limits

    def rate_headers(
        self, render: Callable[[RateState], dict[str, str]], unlimited: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The rate-limit headers for this call's answer: `render`ed from the window when the scope
        sets limits, else the provider's placeholder `unlimited` ones, and none when turned off."""
        if not self.scope.rate_limit_headers:
            return {}
        if self.rate is None:
            return dict(unlimited or {})
        return render(self.rate)


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

    def __init__(
        self, config: EmulatorConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or EmulatorConfig()
        self.calls: list[dict[str, Any]] = []
        # How many times each prompt (by digest) was answered: a prompt answered twice is a call
        # bought twice (the chaos runs count them).
        self.answered: Counter[str] = Counter()
        self.limiter = Limiter(clock)
        self._random = random.Random(self.config.seed)
        self._counter = 0
        self._scope_calls: Counter[str] = Counter()  # calls decided per scope since `configure`

    def configure(self, config: EmulatorConfig) -> None:
        self.config = config
        self._random = random.Random(config.seed)
        self._scope_calls.clear()
        self.limiter.clear()

    def reset(self) -> None:
        self.configure(EmulatorConfig())
        self.calls.clear()
        self.answered.clear()

    def scope_for(self, provider: str, model: str) -> tuple[str, ScopeConfig]:
        for key in (model, provider, "*"):
            if key in self.config.scopes:
                return key, self.config.scopes[key]
        return "*", ScopeConfig()

    @asynccontextmanager
    async def call(
        self, provider: str, model: str, *, tokens: int = 0, inputs: int | None = None
    ) -> AsyncIterator[Call]:
        """Decide this call's fate, record it, wait out the latency, and hold its place among the
        calls in flight until the `async with` block (which sends the answer) ends.

        `tokens` is what the call weighs against the scope's tpm; `inputs` is the number of texts
        of an embedding call (None for a chat call)."""
        key, scope = self.scope_for(provider, model)
        scripted = scope.script.pop(0) if scope.script else None
        latency = scripted.latency_ms if scripted and scripted.latency_ms is not None else scope.latency_ms
        fault, ticket = self._decide(key, scope, scripted, tokens, latency / 1000)
        self.calls.append(
            {
                "t": time.time(),
                "provider": provider,
                "model": model,
                "scope": key,
                "status": fault.status if fault else 200,
                "kind": "chat" if inputs is None else "embed",
                "tokens": tokens,
                "counted": ticket is not None,  # admitted into a limited scope's window
                "inputs": inputs,
            }
        )
        rate = self.limiter.state(key, scope, tokens) if scope.limited else None
        try:
            if latency > 0 and not (fault and fault.status in (429, 503) and scripted is None):
                await asyncio.sleep(latency / 1000)
            yield Call(fault, scope, rate)
        finally:
            if ticket is not None:
                self.limiter.release(key, ticket)

    def _decide(
        self, key: str, scope: ScopeConfig, scripted: ScriptedResponse | None, tokens: int, expected_s: float
    ) -> tuple[Fault | None, int | None]:
        """The call's fault (None: it succeeds) and, if the limiter admitted it, its ticket. A
        scripted outcome replaces the decision: it is neither limited nor counted."""
        if scripted is not None:
            if scripted.status == 200:
                return None, None
            fault = Fault(
                scripted.status,
                scripted.code or _default_code(scripted.status),
                scripted.message or f"emulated error {scripted.status}",
                scripted.retry_after,
            )
            return fault, None
        self._scope_calls[key] += 1
        if scope.outage or (scope.outage_after is not None and self._scope_calls[key] > scope.outage_after):
            return Fault(503, "service_unavailable", "emulated outage: the service is unavailable"), None
        ticket = None
        if scope.limited:  # a scope without limits keeps no window: nothing would read it
            refusal, ticket = self.limiter.admit(key, scope, tokens, expected_s)
            if refusal is not None:
                return Fault(429, "rate_limit_exceeded", refusal.message, refusal.retry_after), None
        # An admitted call that then fails still spent its place in the window, as with real providers.
        if scope.error_rate and self._random.random() < scope.error_rate:
            return Fault(500, "server_error", "emulated internal error"), ticket
        return None, ticket

    def request_tokens(self, conv: Conversation) -> int:
        """What a chat call weighs against a tpm limit: its input tokens plus its max_tokens, or
        its answer's output tokens without one."""
        answer = self._compose(conv, "")
        out = conv.max_tokens if conv.max_tokens is not None else answer.output_tokens
        return answer.input_tokens + out

    def answer(self, conv: Conversation, text: str | None = None) -> Answer:
        """The deterministic answer to a conversation (counted in `answered`); `text`, when
        given (a scope's `answer_text`), is what the model says."""
        self._counter += 1
        answer = self._compose(conv, str(self._counter), text)
        self.answered[answer.request_id.split("-")[1]] += 1
        return answer

    def _compose(self, conv: Conversation, serial: str, given: str | None = None) -> Answer:
        prompt = "\n".join(text for _, text in conv.texts)
        digest = hashlib.sha256(f"{conv.model}\n{prompt}".encode()).hexdigest()
        request_id = f"emu-{digest[:12]}-{serial}"
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
        if given is not None:
            text = given
        elif conv.json_schema is not None:
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
