"""Gemini's Batch API (the Gemini Developer API's batch mode) through the `google-genai` SDK.

A batch is a list of inline requests (`InlinedRequest`: the online adapter's `contents` and
`GenerateContentConfig`, which the SDK turns into the request body as it does online), each
tagged with `metadata.key` = our custom_id, which Gemini echoes on its answer. Inline
requests may total 20 MB; bigger batches would need an input file (not sent yet). The job's
state is Google's (`JOB_STATE_*`); its answers come inline with the ended job, in request
order: a `GenerateContentResponse`, read as the online adapter reads one (a blocked prompt
is ContentFiltered), or a Google error, classified as an online one is. Gemini does not
document what a cancelled or expired job reports for requests it never ran: an error with
code 499 (CANCELLED) or 504 (DEADLINE_EXCEEDED) on a job that ended so is taken as "not run",
as is a request missing from the answers. The Gemini Developer API reports no per-request
counts while a job runs. `label` is the job's display name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from google.genai import types

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
    checked_lines,
    json_bytes,
)
from workers.providers.errors import ProviderError, Transient
from workers.providers.gemini import (
    GeminiProvider,
    classify_gemini_error,
    from_gemini_response,
    map_gemini_error,
)
from workers.providers.gemini_request import to_gemini_config, to_gemini_contents

S = ProviderBatchState
STATES = {
    types.JobState.JOB_STATE_QUEUED: S.VALIDATING,
    types.JobState.JOB_STATE_PENDING: S.VALIDATING,
    types.JobState.JOB_STATE_RUNNING: S.IN_PROGRESS,
    types.JobState.JOB_STATE_PAUSED: S.IN_PROGRESS,
    types.JobState.JOB_STATE_UPDATING: S.IN_PROGRESS,
    types.JobState.JOB_STATE_SUCCEEDED: S.COMPLETED,
    types.JobState.JOB_STATE_PARTIALLY_SUCCEEDED: S.COMPLETED,
    types.JobState.JOB_STATE_FAILED: S.FAILED,
    types.JobState.JOB_STATE_CANCELLING: S.CANCELLING,
    types.JobState.JOB_STATE_CANCELLED: S.CANCELLED,
    types.JobState.JOB_STATE_EXPIRED: S.EXPIRED,
}
# Error codes a cancelled or expired job gives the requests it never ran (Google's CANCELLED
# and DEADLINE_EXCEEDED, as HTTP codes).
UNRUN_CODES = {S.CANCELLED: {499, 504}, S.EXPIRED: {499, 504}}
NOT_RUN = {S.CANCELLED: NotRunReason.CANCELLED, S.EXPIRED: NotRunReason.EXPIRED}


def inlined_request(line: BatchLine) -> types.InlinedRequest:
    """The line as Gemini's batch takes it: the online call's contents and config."""
    contents, system = to_gemini_contents(line.request)
    config = to_gemini_config(line.request, system)
    config.automatic_function_calling = None  # a client-side option of the online SDK call
    return types.InlinedRequest(contents=contents, config=config, metadata={"key": line.custom_id})


def _encoded(request: types.InlinedRequest) -> bytes:
    return json_bytes(request.model_dump(mode="json", exclude_none=True), widest=True)


class GeminiBatchClient:
    """Gemini's Batch API for one deployment."""

    def __init__(self, target: Target) -> None:
        spec = provider_batch_spec(ProviderName.GEMINI)
        assert spec is not None
        self.target = target
        self.limits = spec.limits
        self.adapter = GeminiProvider(target)  # the online adapter's client, built the same way
        self.client = self.adapter.client

    def encode_line(self, line: BatchLine) -> bytes:
        """The request as the create call carries it (as wide as the SDK may make it)."""
        return _encoded(inlined_request(line))

    async def submit(self, lines: Sequence[BatchLine], *, label: str | None = None) -> ProviderBatchRef:
        try:
            src: Any = [inlined_request(line) for line in lines]
            built = iter(src)  # checked_lines encodes each line once, in order: no second translation
            checked_lines(lines, self.target, self.limits, lambda _: _encoded(next(built)), separator_bytes=2)
            config = types.CreateBatchJobConfig(display_name=label) if label else None
            job = await self.client.aio.batches.create(
                model=self.target.deployment.batch_provider_model, src=src, config=config
            )
        except ProviderError:
            raise
        except Exception as exc:
            raise map_gemini_error(exc) from exc
        if not job.name:
            raise Transient("Gemini created a batch job without a name")
        return ProviderBatchRef("gemini", self.target.deployment.name, job.name, None, len(lines))

    async def _job(self, ref: ProviderBatchRef) -> types.BatchJob:
        try:
            return await self.client.aio.batches.get(name=ref.batch_id)
        except Exception as exc:
            raise map_gemini_error(exc) from exc

    async def poll(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        return _status(await self._job(ref))

    async def results(self, ref: ProviderBatchRef) -> AsyncIterator[BatchLineResult]:
        job = await self._job(ref)
        state = _status(job).state
        if not state.terminal:
            raise BatchNotEnded(f"batch {ref.batch_id} is {job.state}; its results come once it has ended")
        seen: set[str] = set()
        answers = (job.dest.inlined_responses if job.dest is not None else None) or []
        for answer in answers:
            custom_id = (answer.metadata or {}).get("key")
            if custom_id and custom_id not in seen:
                seen.add(custom_id)
                yield line_result(custom_id, answer, state)

    async def cancel(self, ref: ProviderBatchRef) -> ProviderBatchStatus:
        try:
            await self.client.aio.batches.cancel(name=ref.batch_id)
        except Exception as exc:
            error = map_gemini_error(exc)
            status = await self.poll(ref)  # a job that ended meanwhile cannot be cancelled: fine
            if status.terminal:
                return status
            raise error from exc
        return await self.poll(ref)

    async def aclose(self) -> None:
        await self.adapter.aclose()


def _status(job: types.BatchJob) -> ProviderBatchStatus:
    state = STATES.get(job.state, S.IN_PROGRESS) if job.state is not None else S.VALIDATING
    error: ProviderError | None = None
    if state is S.FAILED:
        reason = job.error
        error = classify_gemini_error(
            int(reason.code or 400) if reason else 400,
            "",
            str(reason.message or "the batch failed") if reason else "the batch failed",
        )
    provider_status = job.state.value if job.state is not None else "JOB_STATE_UNSPECIFIED"
    return ProviderBatchStatus(state=state, provider_status=provider_status, error=error)


def line_result(custom_id: str, answer: types.InlinedResponse, state: ProviderBatchState) -> BatchLineResult:
    """One inline answer of an ended job, in our terms."""
    if answer.response is not None:
        try:
            return BatchLineResult.succeeded(custom_id, from_gemini_response(answer.response))
        except ProviderError as error:  # a blocked prompt
            return BatchLineResult.failed(custom_id, error)
    reason = answer.error
    code = int(reason.code or 500) if reason is not None else 500
    if code in UNRUN_CODES.get(state, set()):
        return BatchLineResult.unrun(custom_id, NOT_RUN[state])
    message = str(reason.message or "the request failed") if reason is not None else "no answer"
    return BatchLineResult.failed(custom_id, classify_gemini_error(code, "", message))
