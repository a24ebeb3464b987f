"""What a provider-batch client is, and the one vocabulary every provider's batch API maps onto.

A provider-batch client (`<provider>_batch.py` in this package, listed in
`core/provider_batches.py`) sends many chat requests through a provider's own batch API. It is
built like that provider's online adapter, from a `Target` (`base.resolve_target`), holds the
adapter's SDK client, and uses the adapter's translation, so a batch line is exactly the
request the online call would send. Its four operations:

    submit(lines)  -> ProviderBatchRef       the input built (a JSONL file uploaded, or inline
                                             requests) and the batch created, in one window
    poll(ref)      -> ProviderBatchStatus    the state normalised (ProviderBatchState), counts,
                                             and a failed batch's error in the taxonomy
    results(ref)   -> BatchLineResult, ...   each line back by custom_id, streamed: an answer
                                             with usage, a ProviderError, or "not run"
    cancel(ref)    -> ProviderBatchStatus    lines already answered stay answered

Errors of the batch API itself (a bad key, a refused file, a limit) are raised as the same
`errors.py` classes an online call raises; lines are checked against the provider's limits
and the custom_id rule before anything is sent. A `ProviderBatchRef` is plain data (`to_json`
/ `from_json`), so the orchestration can store it and resume polling after a restart.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from core.provider_batches import BatchLimits, provider_batch_spec
from core.types import ChatRequest, ChatResponse
from routing.catalog import Deployment
from workers.providers.base import Target
from workers.providers.errors import InvalidRequest, ProviderError

# The strictest rule among the providers (Anthropic's), so a line plan fits any of them.
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ProviderBatchState(StrEnum):
    """A provider batch's state, whichever provider it is with (OpenAI's set, the richest)."""

    VALIDATING = "validating"  # accepted, not yet running (queued, pending)
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"  # every line ran (each answered or failed on its own)
    FAILED = "failed"  # the batch itself was refused: no line ran
    EXPIRED = "expired"  # the window closed first: the lines not done never ran
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"  # the lines not done by then never ran

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        ProviderBatchState.COMPLETED,
        ProviderBatchState.FAILED,
        ProviderBatchState.EXPIRED,
        ProviderBatchState.CANCELLED,
    }
)


@dataclass(frozen=True)
class BatchLine:
    """One request of a provider batch: our custom_id (at most 64 letters, digits, `_` or `-`),
    the request, and the deployment it goes to (every line of a batch names the same one)."""

    custom_id: str
    request: ChatRequest
    deployment: Deployment


@dataclass(frozen=True)
class ProviderBatchRef:
    """What identifies a submitted provider batch: plain data, stored by the orchestration."""

    provider: str
    deployment: str
    batch_id: str
    input_file_id: str | None  # None when the requests went inline
    line_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "deployment": self.deployment,
            "batch_id": self.batch_id,
            "input_file_id": self.input_file_id,
            "line_count": self.line_count,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProviderBatchRef:
        return cls(
            provider=str(data["provider"]),
            deployment=str(data["deployment"]),
            batch_id=str(data["batch_id"]),
            input_file_id=data.get("input_file_id"),
            line_count=int(data["line_count"]),
        )


@dataclass(frozen=True)
class RequestCounts:
    """Lines answered (`completed`), and failed or never run (`failed`), so far."""

    total: int
    completed: int
    failed: int

    @property
    def pending(self) -> int:
        return max(0, self.total - self.completed - self.failed)


@dataclass(frozen=True)
class ProviderBatchStatus:
    state: ProviderBatchState
    provider_status: str  # the provider's own word for it, for logs and the routing record
    counts: RequestCounts | None = None  # None when the provider reports none (Gemini)
    error: ProviderError | None = None  # why a FAILED batch was refused

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class LineOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the provider ran the line and answered with an error
    NOT_RUN = "not_run"  # the batch expired or was cancelled before the line ran: never charged


class NotRunReason(StrEnum):
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class BatchLineResult:
    custom_id: str
    outcome: LineOutcome
    response: ChatResponse | None = None  # SUCCEEDED: the answer, with usage
    error: ProviderError | None = None  # FAILED: in the online calls' taxonomy
    not_run: NotRunReason | None = None  # NOT_RUN: why

    @classmethod
    def succeeded(cls, custom_id: str, response: ChatResponse) -> BatchLineResult:
        return cls(custom_id, LineOutcome.SUCCEEDED, response=response)

    @classmethod
    def failed(cls, custom_id: str, error: ProviderError) -> BatchLineResult:
        return cls(custom_id, LineOutcome.FAILED, error=error)

    @classmethod
    def unrun(cls, custom_id: str, reason: NotRunReason) -> BatchLineResult:
        return cls(custom_id, LineOutcome.NOT_RUN, not_run=reason)


class BatchNotEnded(RuntimeError):
    """`results` was asked of a batch that has not ended; poll until its state is terminal."""


class NoProviderBatch(ValueError):
    """The provider has no batch API in llmqueue (`core/provider_batches.py`)."""


class ProviderBatchClient(Protocol):
    """One provider's batch API. See the module docstring."""

    limits: BatchLimits

    def __init__(self, target: Target) -> None: ...

    def encode_line(self, line: BatchLine) -> bytes:
        """The line as the provider's input carries it; its size counts against `max_bytes`."""
        ...

    async def submit(self, lines: Sequence[BatchLine], *, label: str | None = None) -> ProviderBatchRef:
        """Create a batch of these lines; `label` tags it at the provider where it can be."""
        ...

    async def poll(self, ref: ProviderBatchRef) -> ProviderBatchStatus: ...

    def results(self, ref: ProviderBatchRef) -> AsyncIterator[BatchLineResult]:
        """Every line of an ended batch, each once, read as it streams in. A line never
        reported (a FAILED batch reports none) did not run. Raises BatchNotEnded before."""
        ...

    async def cancel(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        """Ask the provider to stop; a batch already ended is left as it is."""
        ...

    async def aclose(self) -> None: ...


def batch_client_class(provider: str) -> type[ProviderBatchClient]:
    """The batch client class of `provider`, imported now; NoProviderBatch when it has none."""
    spec = provider_batch_spec(provider)
    if spec is None:
        raise NoProviderBatch(
            f"provider {provider!r} has no batch API in llmqueue (core/provider_batches.py)"
        )
    module_name, _, class_name = spec.client.partition(":")
    cls: type[ProviderBatchClient] = getattr(importlib.import_module(module_name), class_name)
    return cls


def checked_lines(
    lines: Sequence[BatchLine],
    target: Target,
    limits: BatchLimits,
    encode: Callable[[BatchLine], bytes],
    separator_bytes: int = 1,
) -> list[bytes]:
    """The lines encoded, once each is known to fit the batch: InvalidRequest names the first
    rule broken (no line, a bad or repeated custom_id, another deployment, too many lines or
    bytes), before anything is sent."""
    if not lines:
        raise InvalidRequest("a provider batch needs at least one line")
    provider = target.deployment.provider
    if limits.max_lines is not None and len(lines) > limits.max_lines:
        raise InvalidRequest(
            f"{len(lines)} lines are more than a {provider} batch holds ({limits.max_lines}): split them"
        )
    seen: set[str] = set()
    encoded: list[bytes] = []
    size = 0
    for number, line in enumerate(lines, start=1):
        if not CUSTOM_ID.fullmatch(line.custom_id):
            raise InvalidRequest(
                f"line {number}: custom_id {line.custom_id!r} must be 1-64 letters, digits, '_' or '-'"
            )
        if line.custom_id in seen:
            raise InvalidRequest(f"line {number}: custom_id {line.custom_id!r} appears twice")
        seen.add(line.custom_id)
        if line.deployment.name != target.deployment.name:
            raise InvalidRequest(
                f"line {number} ({line.custom_id}) is for deployment {line.deployment.name!r}, not "
                f"{target.deployment.name!r}: a provider batch goes to one deployment"
            )
        data = encode(line)
        size += len(data) + separator_bytes
        if size > limits.max_bytes:
            raise InvalidRequest(
                f"the batch's input passes {limits.max_bytes} bytes, the most a {provider} batch takes, "
                f"at line {number} ({line.custom_id}): split it"
            )
        encoded.append(data)
    return encoded


def json_bytes(value: Any, *, widest: bool = False) -> bytes:
    """Compact JSON, as a JSONL line we upload is written. `widest`: JSON as wide as an SDK
    might serialize it (spaces after separators, non-ASCII escaped), for sizing a request
    the SDK serializes itself."""
    if widest:
        return json.dumps(value).encode()
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def as_object(value: Any) -> dict[str, Any]:
    """A JSON value where an object is expected: the object, or an empty one."""
    return value if isinstance(value, dict) else {}


async def jsonl_rows(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a streamed JSONL text, one per non-blank line; a line that is not a
    JSON object is skipped (it names no custom_id to report it under)."""
    async for text in lines:
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            yield row
