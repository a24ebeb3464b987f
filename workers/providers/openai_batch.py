"""OpenAI's Batch API (Files + Batches) through the official `openai` SDK; Azure's global batch
differs only in how the client is built and how lines name their endpoint (`azure_batch.py`).

A batch is a JSONL file uploaded with `purpose=batch`, one line per request
(`{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`, the body being
exactly the online adapter's `to_openai_params`), then a batch created from it with the
`24h` window. Results are two JSONL files, output and errors, downloaded as streams and read
line by line: a 200 line is a chat completion, read as the online adapter reads one; another
status is classified as an online error with that status is; a line the batch never ran
carries `batch_expired` or `batch_cancelled`. A batch refused at validation is FAILED with
its `errors.data` in the taxonomy (an enqueued-token limit is a RateLimited: retry later).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Final, cast

import httpx2
import openai
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from core.provider_batches import BatchLimits, provider_batch_spec
from core.providers import ProviderName
from workers.providers.base import Target
from workers.providers.batch_base import (
    BatchLine,
    BatchLineResult,
    BatchNotEnded,
    NotRunReason,
    ProviderBatchRef,
    ProviderBatchState,
    ProviderBatchStatus,
    RequestCounts,
    as_object,
    checked_lines,
    json_bytes,
    jsonl_rows,
)
from workers.providers.errors import (
    InvalidRequest,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Transient,
)
from workers.providers.openai import (
    OpenAIProvider,
    classify_openai_error,
    from_openai_completion,
    map_openai_error,
    to_openai_params,
)

WINDOW: Final = "24h"  # the only completion window OpenAI (and Azure) accept
STATES = {state.value: state for state in ProviderBatchState}  # OpenAI's words are ours
NOT_RUN_CODES = {"batch_expired": NotRunReason.EXPIRED, "batch_cancelled": NotRunReason.CANCELLED}
# Validation error codes (`errors.data[].code`) that are a quota, not a bad file.
QUOTA_CODES = {"token_limit_exceeded": RateLimited, "insufficient_quota": QuotaExhausted}


def _limits(provider: ProviderName) -> BatchLimits:
    spec = provider_batch_spec(provider)
    assert spec is not None, f"{provider} is missing from core/provider_batches.py"
    return spec.limits


class OpenAIBatchClient:
    """OpenAI's Batch API for one deployment."""

    provider: ClassVar[ProviderName] = ProviderName.OPENAI
    adapter_class: ClassVar[type[OpenAIProvider]] = OpenAIProvider
    endpoint: ClassVar[str] = "/v1/chat/completions"  # the batch's endpoint and each line's url

    def __init__(self, target: Target) -> None:
        self.target = target
        self.limits = _limits(self.provider)
        self.adapter = self.adapter_class(target)  # the online adapter's client, built the same way
        self.client = self.adapter.client

    def encode_line(self, line: BatchLine) -> bytes:
        body = to_openai_params(line.request, line.deployment.batch_provider_model)
        return json_bytes({"custom_id": line.custom_id, "method": "POST", "url": self.endpoint, "body": body})

    async def submit(self, lines: Sequence[BatchLine], *, label: str | None = None) -> ProviderBatchRef:
        encoded = checked_lines(lines, self.target, self.limits, self.encode_line)
        data = b"\n".join(encoded) + b"\n"
        try:
            uploaded = await self.client.files.create(file=("batch_input.jsonl", data), purpose="batch")
        except Exception as exc:
            raise map_openai_error(exc) from exc
        try:
            batch = await self.client.batches.create(
                input_file_id=uploaded.id,
                endpoint=cast(Any, self.endpoint),  # Azure's spelling is not in the SDK's literal
                completion_window=WINDOW,
                metadata={"llmqueue": label} if label else None,
            )
        except Exception as exc:
            await self._forget_file(uploaded.id)
            raise map_openai_error(exc) from exc
        return ProviderBatchRef(
            self.provider.value, self.target.deployment.name, batch.id, uploaded.id, len(lines)
        )

    async def poll(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        try:
            batch = await self.client.batches.retrieve(ref.batch_id)
        except Exception as exc:
            raise map_openai_error(exc) from exc
        return self._status(batch)

    def _status(self, batch: Any) -> ProviderBatchStatus:
        state = STATES.get(batch.status, ProviderBatchState.IN_PROGRESS)  # a status new to us: running
        counts = batch.request_counts
        return ProviderBatchStatus(
            state=state,
            provider_status=batch.status,
            counts=RequestCounts(counts.total, counts.completed, counts.failed) if counts else None,
            error=_batch_error(batch) if state is ProviderBatchState.FAILED else None,
        )

    async def results(self, ref: ProviderBatchRef) -> AsyncIterator[BatchLineResult]:
        try:
            batch = await self.client.batches.retrieve(ref.batch_id)
        except Exception as exc:
            raise map_openai_error(exc) from exc
        if not self._status(batch).terminal:
            raise BatchNotEnded(f"batch {ref.batch_id} is {batch.status}; its results come once it has ended")
        seen: set[str] = set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            async for row in self._rows(file_id):
                custom_id = row.get("custom_id")
                if isinstance(custom_id, str) and custom_id not in seen:
                    seen.add(custom_id)
                    yield line_result(custom_id, row)

    async def _rows(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        """A result file's rows, read from the response as it streams (never held whole)."""
        try:
            async with self.client.files.with_streaming_response.content(file_id) as response:
                async for row in jsonl_rows(response.iter_lines()):
                    yield row
        except openai.OpenAIError as exc:
            raise map_openai_error(exc) from exc
        except (httpx2.HTTPError, OSError) as exc:  # the stream broke off mid-way
            raise Transient(f"reading result file {file_id} failed: {exc!r}") from exc

    async def cancel(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        try:
            return self._status(await self.client.batches.cancel(ref.batch_id))
        except Exception as exc:
            error = map_openai_error(exc)
        status = await self.poll(ref)  # a batch that ended meanwhile cannot be cancelled: fine
        if status.terminal or status.state is ProviderBatchState.CANCELLING:
            return status
        raise error

    async def _forget_file(self, file_id: str) -> None:
        """Best effort: an input file whose batch was never created is of no use."""
        with contextlib.suppress(openai.OpenAIError):
            await self.client.files.delete(file_id)

    async def aclose(self) -> None:
        await self.adapter.aclose()


def line_result(custom_id: str, row: dict[str, Any]) -> BatchLineResult:
    """One row of an output or error file, in our terms."""
    response = row.get("response")
    error = as_object(row.get("error"))
    if not isinstance(response, dict):
        code = str(error.get("code") or "")
        if code in NOT_RUN_CODES:
            return BatchLineResult.unrun(custom_id, NOT_RUN_CODES[code])
        return BatchLineResult.failed(custom_id, Transient(str(error.get("message") or "no response")))
    status = int(response.get("status_code") or 0)
    body = as_object(response.get("body"))
    request_id = response.get("request_id")
    if status != 200:
        failure = classify_openai_error(status, as_object(body.get("error")), request_id=request_id)
        return BatchLineResult.failed(custom_id, failure)
    try:
        answer = from_openai_completion(ChatCompletion.model_validate(body))
    except (ValidationError, IndexError) as exc:
        return BatchLineResult.failed(
            custom_id, Transient(f"unreadable answer: {exc}", provider_request_id=request_id)
        )
    return BatchLineResult.succeeded(custom_id, answer)


def _batch_error(batch: Any) -> ProviderError:
    """Why validation refused a batch: its `errors.data`, in the taxonomy."""
    data = list(batch.errors.data or []) if batch.errors is not None else []
    if not data:
        return InvalidRequest("the provider refused the batch without saying why")
    described = "; ".join(
        (f"line {e.line}: " if e.line else "") + f"{e.message or e.code}" + (f" ({e.code})" if e.code else "")
        for e in data[:5]
    )
    more = f"; and {len(data) - 5} more" if len(data) > 5 else ""
    cls = next((QUOTA_CODES[e.code] for e in data if e.code in QUOTA_CODES), InvalidRequest)
    return cls(described + more, status_code=400 if cls is InvalidRequest else 429)
