"""Mistral's batch jobs through the official `mistralai` SDK.

A batch is a JSONL file uploaded with `purpose=batch`, one line per request
(`{"custom_id", "body"}`, the body being the online adapter's `to_mistral_params` without the
model, which the job names), then a job created from it on `/v1/chat/completions` with a
24-hour `timeout_hours`. Statuses are QUEUED, RUNNING, SUCCESS, FAILED, TIMEOUT_EXCEEDED,
CANCELLATION_REQUESTED and CANCELLED. Results are two JSONL files (output and errors),
downloaded as streams and read line by line, in OpenAI's shape with Mistral's bodies: a 200
line is a chat completion, read as the online adapter reads one; another status is
classified as an online error is; a line with no response on a job that timed out or was
cancelled never ran. `label` goes in the job's metadata.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import httpx2
from mistralai.client import errors
from mistralai.client.models import ChatCompletionResponse
from pydantic import ValidationError

from core.provider_batches import provider_batch_spec
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
from workers.providers.errors import InvalidRequest, ProviderError, Transient
from workers.providers.mistral import (
    MistralProvider,
    classify_mistral_error,
    from_mistral_completion,
    map_mistral_error,
)
from workers.providers.mistral_request import to_mistral_params

ENDPOINT: Final = "/v1/chat/completions"
TIMEOUT_HOURS = 24
S = ProviderBatchState
STATES = {
    "QUEUED": S.VALIDATING,
    "RUNNING": S.IN_PROGRESS,
    "SUCCESS": S.COMPLETED,
    "FAILED": S.FAILED,
    "TIMEOUT_EXCEEDED": S.EXPIRED,
    "CANCELLATION_REQUESTED": S.CANCELLING,
    "CANCELLED": S.CANCELLED,
}
NOT_RUN = {S.CANCELLED: NotRunReason.CANCELLED, S.EXPIRED: NotRunReason.EXPIRED}


class MistralBatchClient:
    """Mistral's batch jobs for one deployment."""

    def __init__(self, target: Target) -> None:
        spec = provider_batch_spec(ProviderName.MISTRAL)
        assert spec is not None
        self.target = target
        self.limits = spec.limits
        self.adapter = MistralProvider(target)  # the online adapter's client, built the same way
        self.client = self.adapter.client

    def encode_line(self, line: BatchLine) -> bytes:
        body = to_mistral_params(line.request, line.deployment.batch_provider_model)
        body.pop("model")  # the job names the model
        return json_bytes({"custom_id": line.custom_id, "body": body})

    async def submit(self, lines: Sequence[BatchLine], *, label: str | None = None) -> ProviderBatchRef:
        encoded = checked_lines(lines, self.target, self.limits, self.encode_line)
        data = b"\n".join(encoded) + b"\n"
        try:
            uploaded = await self.client.files.upload_async(
                file={"file_name": "batch_input.jsonl", "content": data}, purpose="batch"
            )
        except Exception as exc:
            raise map_mistral_error(exc) from exc
        try:
            job = await self.client.batch.jobs.create_async(
                input_files=[uploaded.id],
                model=self.target.deployment.batch_provider_model,
                endpoint=ENDPOINT,
                metadata={"llmqueue": label} if label else None,
                timeout_hours=TIMEOUT_HOURS,
            )
        except Exception as exc:
            with contextlib.suppress(errors.MistralError, httpx2.HTTPError):  # of no use without its job
                await self.client.files.delete_async(file_id=uploaded.id)
            raise map_mistral_error(exc) from exc
        return ProviderBatchRef("mistral", self.target.deployment.name, job.id, uploaded.id, len(lines))

    async def _job(self, ref: ProviderBatchRef) -> Any:
        try:
            return await self.client.batch.jobs.get_async(job_id=ref.batch_id)
        except Exception as exc:
            raise map_mistral_error(exc) from exc

    async def poll(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        return _status(await self._job(ref))

    async def results(self, ref: ProviderBatchRef) -> AsyncIterator[BatchLineResult]:
        job = await self._job(ref)
        state = _status(job).state
        if not state.terminal:
            raise BatchNotEnded(
                f"batch job {ref.batch_id} is {job.status}; its results come once it has ended"
            )
        seen: set[str] = set()
        for file_id in (job.output_file, job.error_file):
            if not file_id:
                continue
            async for row in self._rows(str(file_id)):
                custom_id = row.get("custom_id")
                if isinstance(custom_id, str) and custom_id not in seen:
                    seen.add(custom_id)
                    yield line_result(custom_id, row, state)

    async def _rows(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        """A result file's rows, read from the response as it streams (never held whole)."""
        try:
            response = await self.client.files.download_async(file_id=file_id)
        except Exception as exc:
            raise map_mistral_error(exc) from exc
        try:
            async for row in jsonl_rows(response.aiter_lines()):
                yield row
        except (httpx2.HTTPError, OSError) as exc:  # the stream broke off mid-way
            raise Transient(f"reading result file {file_id} failed: {exc!r}") from exc
        finally:
            await response.aclose()

    async def cancel(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        try:
            return _status(await self.client.batch.jobs.cancel_async(job_id=ref.batch_id))
        except (errors.MistralError, httpx2.HTTPError) as exc:
            error = map_mistral_error(exc)
        status = await self.poll(ref)  # a job that ended meanwhile cannot be cancelled: fine
        if status.terminal or status.state is S.CANCELLING:
            return status
        raise error

    async def aclose(self) -> None:
        await self.adapter.aclose()


def _status(job: Any) -> ProviderBatchStatus:
    state = STATES.get(str(job.status), S.IN_PROGRESS)
    error: ProviderError | None = None
    if state is S.FAILED:
        described = "; ".join(
            f"{e.message} ({e.count} lines)" if getattr(e, "count", None) else str(e.message)
            for e in job.errors
        )
        error = InvalidRequest(
            described or "the provider refused the batch without saying why", status_code=400
        )
    failed = job.failed_requests
    if state in NOT_RUN:  # Mistral counts the lines that ran; the others never will
        failed = job.total_requests - job.succeeded_requests
    return ProviderBatchStatus(
        state=state,
        provider_status=str(job.status),
        counts=RequestCounts(job.total_requests, job.succeeded_requests, failed),
        error=error,
    )


def line_result(custom_id: str, row: dict[str, Any], state: ProviderBatchState) -> BatchLineResult:
    """One row of an output or error file, in our terms."""
    response = row.get("response")
    if not isinstance(response, dict):
        if state in NOT_RUN:
            return BatchLineResult.unrun(custom_id, NOT_RUN[state])
        error = as_object(row.get("error"))
        return BatchLineResult.failed(custom_id, Transient(str(error.get("message") or "no response")))
    status = int(response.get("status_code") or 0)
    body = as_object(response.get("body"))
    request_id = row.get("id") if isinstance(row.get("id"), str) else None
    if status != 200:
        return BatchLineResult.failed(custom_id, classify_mistral_error(status, body, request_id=request_id))
    try:
        answer = from_mistral_completion(ChatCompletionResponse.model_validate(body))
    except (ValidationError, IndexError) as exc:
        return BatchLineResult.failed(
            custom_id, Transient(f"unreadable answer: {exc}", provider_request_id=request_id)
        )
    return BatchLineResult.succeeded(custom_id, answer)
