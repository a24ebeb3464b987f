"""How a finished job reads back to a client: OpenAI's chat.completion object, OpenAI's batch
output and error lines (matched by custom_id), and the native batches' result rows.

Shared by the API (chat completions, result downloads) and the workers (a batch's output and
error files are built at finalize), so one job always reads back the same way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from core.errors import JobError
from jobstore.models import Job, JobStatus

EXPIRED_CODE = "batch_expired"  # a request cancelled when its batch expired (jobstore/batches.py)
CSV_COLUMNS = (
    "id",
    "line",
    "status",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "total_latency_ms",
    "parts",
    "result",
    "error",
)


def unix(job_time: Any) -> int:
    return int(job_time.timestamp()) if job_time is not None else 0


def chat_completion(job: Job) -> dict[str, Any]:
    """A succeeded job as OpenAI's `chat.completion` (with an `llmqueue` extension object)."""
    message: dict[str, Any] = {"role": "assistant", "content": job.result_text, "refusal": None}
    if job.tool_calls:
        message["tool_calls"] = job.tool_calls
    return {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": unix(job.created_at),
        "model": job.model or job.model_requested or "",
        "choices": [
            {"index": 0, "message": message, "finish_reason": job.finish_reason or "stop", "logprobs": None}
        ],
        "usage": usage(job),
        "system_fingerprint": None,
        "llmqueue": {
            "job_id": job.id,
            "provider": job.provider,
            "deployment": job.deployment,
            "cost_usd": str(job.cost_usd),
            "strategy": job.strategy,
            "provider_batch_id": job.provider_batch_id,  # economy mode: the provider batch that answered
        },
    }


def usage(job: Job) -> dict[str, Any]:
    return {
        "prompt_tokens": job.input_tokens,
        "completion_tokens": job.output_tokens,
        "total_tokens": job.input_tokens + job.output_tokens,
        "prompt_tokens_details": {"cached_tokens": job.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": job.reasoning_tokens},
    }


def error_status(job: Job) -> int:
    if job.status == JobStatus.CANCELLED:
        return 499
    error = JobError.from_code(job.error_type, JobError.ROUTING_ERROR)
    return 400 if error.client_fault and job.error_type == error.value else 502


def job_error(job: Job) -> dict[str, Any]:
    if job.status == JobStatus.CANCELLED and job.error_type == EXPIRED_CODE:
        return {"code": EXPIRED_CODE, "message": job.error_message or "the batch expired"}
    if job.status == JobStatus.CANCELLED and job.error_type:  # cancelled by llmqueue (a revoked key)
        return {"code": job.error_type, "message": job.error_message or "the request was cancelled"}
    if job.status == JobStatus.CANCELLED:
        return {"code": "batch_cancelled", "message": "the batch was cancelled before this request ran"}
    return {"code": job.error_type or "failed", "message": job.error_message or "the request failed"}


def openai_output_line(job: Job) -> dict[str, Any]:
    """One line of an OpenAI batch output file."""
    return {
        "id": f"batch_req_{job.id}",
        "custom_id": job.custom_id,
        "response": {"status_code": 200, "request_id": job.id, "body": chat_completion(job)},
        "error": None,
    }


def openai_error_line(job: Job) -> dict[str, Any]:
    """One line of an OpenAI batch error file: a request that failed or never ran. One its
    batch's window ended before has no response, as OpenAI writes it."""
    error = job_error(job)
    if error["code"] == EXPIRED_CODE:
        return {"id": f"batch_req_{job.id}", "custom_id": job.custom_id, "response": None, "error": error}
    status = error_status(job)
    return {
        "id": f"batch_req_{job.id}",
        "custom_id": job.custom_id,
        "response": {
            "status_code": status,
            "request_id": job.id,
            "body": {
                "error": {
                    "message": error["message"],
                    "type": "invalid_request_error" if status == 400 else "api_error",
                    "param": None,
                    "code": error["code"],
                }
            },
        },
        "error": error,
    }


def document_row(job: Job, parts: tuple[int, int, Decimal, int] | None = None) -> dict[str, Any]:
    """A native batch's result for one document; a split document's parts add their usage."""
    tokens_in, tokens_out, cost, n_parts = parts or (0, 0, Decimal(0), 1)
    return {
        "id": job.custom_id,
        "line": job.line_number,
        "status": job.status,
        "provider": job.provider,
        "model": job.model,
        "input_tokens": job.input_tokens + tokens_in,
        "output_tokens": job.output_tokens + tokens_out,
        "cost_usd": str(job.cost_usd + cost),
        "latency_ms": job.latency_ms,
        "total_latency_ms": job.total_latency_ms,
        "parts": n_parts,
        "result": job.result_text,
        "error": job_error(job) if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) else None,
        "metadata": job.job_metadata,
        "job_id": job.id,
        "provider_batch_id": job.provider_batch_id,  # economy mode: None when it went online
    }


# A cell a spreadsheet would read as a formula (or whose leading tab or CR it would drop to
# find one): OWASP's list. Such a cell gets a leading apostrophe, so it reads as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that cannot be taken for a formula; numbers and empty cells as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Document rows as CSV text, header first, a row at a time; every text cell is safe to
    open in a spreadsheet (model output and document ids are anyone's text)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = dict(row)
        error = flat.get("error")
        flat["error"] = f"{error['code']}: {error['message']}" if error else ""
        writer.writerow({k: spreadsheet_safe(v) for k, v in flat.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
