"""Anthropic's Message Batches through the official `anthropic` SDK.

A batch is the list of requests itself (`custom_id` + `params`), sent inline in the create
call; each `params` is exactly the online adapter's `to_anthropic_params`, with the sampling
fields that adapter passes as the SDK's `extra_body` put back into the body (a batch request
is plain JSON). Anthropic reports a batch as `in_progress`, `canceling`, then `ended`, with
every request counted as `processing` until the end: an ended batch is CANCELLED when a
cancel was asked, EXPIRED when requests expired, else COMPLETED. Results are the JSONL at
the batch's `results_url`, which the SDK decodes as it streams: `succeeded` is a Message,
read as the online adapter reads one; `errored` is classified by its error type as an online
error of that type is; `canceled` and `expired` requests never ran. Message batches carry no
metadata, so `label` is not sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anthropic

from core.provider_batches import provider_batch_spec
from core.providers import ProviderName
from workers.providers.anthropic import (
    AnthropicProvider,
    classify_anthropic_error,
    from_anthropic_message,
    map_anthropic_error,
)
from workers.providers.anthropic_request import to_anthropic_params
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
    checked_lines,
    json_bytes,
)
from workers.providers.errors import ProviderError, Transient

NOT_RUN = {"canceled": NotRunReason.CANCELLED, "expired": NotRunReason.EXPIRED}


def batch_params(line: BatchLine) -> dict[str, Any]:
    """The line's Messages API body: the online call's parameters, `extra_body` merged in."""
    dep = line.deployment
    params = to_anthropic_params(line.request, dep.batch_provider_model, dep.model.max_output_tokens)
    params.update(params.pop("extra_body", None) or {})
    return params


class AnthropicBatchClient:
    """Anthropic's Message Batches API for one deployment."""

    def __init__(self, target: Target) -> None:
        spec = provider_batch_spec(ProviderName.ANTHROPIC)
        assert spec is not None
        self.target = target
        self.limits = spec.limits
        self.adapter = AnthropicProvider(target)  # the online adapter's client, built the same way
        self.client = self.adapter.client

    def encode_line(self, line: BatchLine) -> bytes:
        """The request as the create call carries it (as wide as the SDK may make it)."""
        return json_bytes({"custom_id": line.custom_id, "params": batch_params(line)}, widest=True)

    async def submit(self, lines: Sequence[BatchLine], *, label: str | None = None) -> ProviderBatchRef:
        try:
            requests: Any = [{"custom_id": line.custom_id, "params": batch_params(line)} for line in lines]
            built = iter(requests)  # checked_lines encodes each line once, in order: no second translation
            checked_lines(
                lines,
                self.target,
                self.limits,
                lambda _: json_bytes(next(built), widest=True),
                separator_bytes=2,
            )
            batch = await self.client.messages.batches.create(requests=requests)
        except ProviderError:
            raise
        except Exception as exc:
            raise map_anthropic_error(exc) from exc
        return ProviderBatchRef("anthropic", self.target.deployment.name, batch.id, None, len(lines))

    async def _retrieve(self, ref: ProviderBatchRef) -> Any:
        try:
            return await self.client.messages.batches.retrieve(ref.batch_id)
        except Exception as exc:
            raise map_anthropic_error(exc) from exc

    async def poll(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        return _status(await self._retrieve(ref))

    async def results(self, ref: ProviderBatchRef) -> AsyncIterator[BatchLineResult]:
        batch = await self._retrieve(ref)
        if batch.processing_status != "ended":
            status = batch.processing_status
            raise BatchNotEnded(
                f"message batch {ref.batch_id} is {status}; its results come once it has ended"
            )
        seen: set[str] = set()
        try:
            decoder = await self.client.messages.batches.results(ref.batch_id)
            async for row in decoder:
                if row.custom_id not in seen:
                    seen.add(row.custom_id)
                    yield line_result(row)
        except ProviderError:
            raise
        except anthropic.AnthropicError as exc:
            raise map_anthropic_error(exc) from exc
        except OSError as exc:  # the stream broke off mid-way
            raise Transient(f"reading the results of {ref.batch_id} failed: {exc!r}") from exc

    async def cancel(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        try:
            return _status(await self.client.messages.batches.cancel(ref.batch_id))
        except Exception as exc:
            error = map_anthropic_error(exc)
        status = await self.poll(ref)  # a batch that ended meanwhile cannot be cancelled: fine
        if status.terminal or status.state is ProviderBatchState.CANCELLING:
            return status
        raise error

    async def aclose(self) -> None:
        await self.adapter.aclose()


def _status(batch: Any) -> ProviderBatchStatus:
    counts = batch.request_counts
    unrun = counts.canceled + counts.expired
    total = counts.processing + counts.succeeded + counts.errored + unrun
    if batch.processing_status == "ended":
        if batch.cancel_initiated_at is not None:
            state = ProviderBatchState.CANCELLED
        elif counts.expired:
            state = ProviderBatchState.EXPIRED
        else:
            state = ProviderBatchState.COMPLETED
    elif batch.processing_status == "canceling":
        state = ProviderBatchState.CANCELLING
    else:
        state = ProviderBatchState.IN_PROGRESS
    return ProviderBatchStatus(
        state=state,
        provider_status=batch.processing_status,
        counts=RequestCounts(total, counts.succeeded, counts.errored + unrun),
    )


def line_result(row: Any) -> BatchLineResult:
    """One row of a message batch's results, in our terms."""
    result = row.result
    if result.type == "succeeded":
        return BatchLineResult.succeeded(row.custom_id, from_anthropic_message(result.message))
    if result.type in NOT_RUN:
        return BatchLineResult.unrun(row.custom_id, NOT_RUN[result.type])
    response = result.error  # an error response: {"type": "error", "error": {type, message}}
    error = getattr(response, "error", None)
    kind = str(getattr(error, "type", "") or "api_error")
    message = str(getattr(error, "message", "") or "the request failed")
    request_id = getattr(response, "request_id", None)
    return BatchLineResult.failed(
        row.custom_id, classify_anthropic_error(kind, message, request_id=request_id)
    )
