"""OpenAI's Batches API, and Azure OpenAI's global batch, as the emulator speaks them.

Served under `/openai/v1` and (with the `api-version` query parameter the `AzureOpenAI`
client always sends) under `/azure/openai`, next to the Files API of
`emulator/batch_openai_files.py` that uploads their input and serves their results:

    POST   {prefix}/batches                  create from an uploaded `purpose=batch` JSONL file
    GET    {prefix}/batches                  list (newest first; `after`, `limit`)
    GET    {prefix}/batches/{id}             retrieve
    POST   {prefix}/batches/{id}/cancel      cancel

A batch goes validating -> in_progress -> finalizing -> completed, or failed (its input
file did not validate: `errors.data`), expired (its deadline came first) or cancelling ->
cancelled. Once it ends, answered lines are in `output_file_id` and the rest (per-line
errors, and lines expired or cancelled before they ran) in `error_file_id`; either is
absent when it would be empty. `request_counts.failed` counts every line of the error file.
Azure's lines name the deployment as their `model`; Azure never expires a batch on its own
(its documentation says so) unless `BatchSettings.expire_after_s` asks it to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from emulator.batch_engine import Batch
from emulator.batch_openai_files import add_file_routes, bad, missing, page, refusal
from emulator.batch_openai_lines import line_runner, read_input, result_line, unrun_line
from emulator.batch_store import BatchStore, new_id, record, store_for
from emulator.core import Emulator, Fault
from emulator.openai_format import error_response

DAY_S = 24 * 3600.0
MB = 1024 * 1024
OPENAI_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
AZURE_ENDPOINTS = ("/chat/completions", "/embeddings", "/v1/chat/completions", "/v1/embeddings")


@dataclass(frozen=True)
class Flavour:
    """What differs between OpenAI's and Azure's batch service."""

    provider: str
    prefix: str
    endpoints: tuple[str, ...]
    max_lines: int
    window_s: float | None  # the provider's own expiry window; None: never
    max_bytes: int = 200 * MB


OPENAI = Flavour("openai", "/openai/v1", OPENAI_ENDPOINTS, 50_000, DAY_S)
AZURE = Flavour("azure", "/azure/openai", AZURE_ENDPOINTS, 100_000, None)


def _result_files(batch: Batch, store: BatchStore) -> None:
    """Writes the output and error files once the batch has ended (not when validation failed)."""
    if "output_file_id" in batch.meta or batch.status not in ("completed", "expired", "cancelled"):
        return
    ran = batch.lines[: batch.done]
    output = [result_line(line) for line in ran if line.result is not None and line.result.ok]
    errors = [result_line(line) for line in ran if line.result is not None and not line.result.ok]
    unrun_code = "batch_cancelled" if batch.status == "cancelled" else "batch_expired"
    errors += [unrun_line(line, unrun_code) for line in batch.lines[batch.done :]]
    for key, rows, kind in (("output_file_id", output, "output"), ("error_file_id", errors, "error")):
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        name = f"{batch.id}_{kind}.jsonl"
        batch.meta[key] = store.add_file(batch.provider, name, "batch_output", data).id if rows else None


def batch_json(batch: Batch, store: BatchStore) -> dict[str, Any]:
    _result_files(batch, store)
    ended_early = batch.status in ("expired", "cancelled")
    validated = batch.status not in ("validating", "failed")
    at = {status: int(t) for status, t in batch.events.items()}
    deadline = batch.wall(batch.deadline) if batch.deadline != float("inf") else None
    input_tokens, output_tokens = batch.usage()
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.meta["endpoint"],
        "model": batch.model or None,
        "errors": {"object": "list", "data": batch.invalid} if batch.status == "failed" else None,
        "input_file_id": batch.meta["input_file_id"],
        "completion_window": "24h",
        "status": batch.status,
        "output_file_id": batch.meta.get("output_file_id"),
        "error_file_id": batch.meta.get("error_file_id"),
        "created_at": int(batch.created_wall),
        "in_progress_at": at.get("in_progress"),
        "expires_at": int(deadline) if deadline is not None else None,
        "finalizing_at": at.get("finalizing"),
        "completed_at": at.get("completed"),
        "failed_at": at.get("failed"),
        "expired_at": at.get("expired"),
        "cancelling_at": at.get("cancelling"),
        "cancelled_at": at.get("cancelled"),
        "request_counts": {
            "total": len(batch.lines) if validated else 0,
            "completed": batch.succeeded,
            "failed": batch.errored + (len(batch.lines) - batch.done if ended_early else 0),
        },
        "metadata": batch.meta.get("metadata"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        return "Invalid 'metadata': at most 16 key-value pairs are allowed."
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            return f"Invalid 'metadata.{key}': keys are at most 64 characters, values strings of at most 512."
    return None


def add_flavour_routes(app: web.Application, emu: Emulator, flavour: Flavour) -> None:
    store = store_for(emu)
    provider = flavour.provider

    async def create(request: web.Request) -> web.Response:
        if (refused := refusal(request, provider)) is not None:
            return refused
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return bad("We could not parse the JSON body of your request.")
        endpoint = body.get("endpoint")
        if endpoint not in flavour.endpoints:
            supported = ", ".join(flavour.endpoints)
            return bad(
                f"Invalid value for 'endpoint': {endpoint!r}; supported: {supported}.", "invalid_value"
            )
        if body.get("completion_window") != "24h":
            return bad("Invalid value for 'completion_window': only '24h' is supported.", "invalid_value")
        if (problem := _metadata_problem(body.get("metadata"))) is not None:
            return bad(problem, "invalid_value")
        file_id = str(body.get("input_file_id") or "")
        stored = store.file(file_id, provider)
        if stored is None:
            return missing("File", file_id)
        if stored.purpose != "batch":
            return bad(f"The file {file_id} has purpose '{stored.purpose}'; a batch needs purpose 'batch'.")
        settings = emu.config.batch.for_provider(provider)
        lines, invalid = read_input(
            stored.data,
            endpoint,
            settings,
            settings.max_lines or flavour.max_lines,
            settings.max_bytes or flavour.max_bytes,
            same_url=provider == "openai",
        )
        batch = store.create(
            emu,
            provider,
            new_id("batch_", 32),
            lines,
            line_runner(emu, endpoint),
            flavour.window_s,
            model=lines[0].model if lines else "",
            invalid=invalid,
            meta={"endpoint": endpoint, "input_file_id": file_id, "metadata": body.get("metadata")},
        )
        record(emu, provider, "batch_create", batch.model, batch.id)
        return web.json_response(batch_json(batch, store))

    async def retrieve(request: web.Request) -> web.Response:
        if (refused := refusal(request, provider)) is not None:
            return refused
        batch_id = request.match_info["batch_id"]
        batch = store.get(batch_id, provider)
        record(emu, provider, "batch_poll", batch.model if batch else "", batch_id, 200 if batch else 404)
        if batch is None:
            return missing("Batch", batch_id)
        return web.json_response(batch_json(batch, store))

    async def list_batches(request: web.Request) -> web.Response:
        if (refused := refusal(request, provider)) is not None:
            return refused
        limit = max(1, min(100, int(request.query.get("limit", 20))))
        rows = [batch_json(b, store) for b in store.listed(provider)]
        record(emu, provider, "batch_list")
        return web.json_response(page(rows, request.query.get("after"), limit))

    async def cancel(request: web.Request) -> web.Response:
        if (refused := refusal(request, provider)) is not None:
            return refused
        batch_id = request.match_info["batch_id"]
        batch = store.get(batch_id, provider)
        record(emu, provider, "batch_cancel", batch.model if batch else "", batch_id, 200 if batch else 404)
        if batch is None:
            return missing("Batch", batch_id)
        if not batch.cancel(store.clock()):
            message = f"Cannot cancel a batch with status '{batch.status}'."
            return error_response(Fault(409, "batch_not_cancellable", message))
        return web.json_response(batch_json(batch, store))

    prefix = flavour.prefix
    add_file_routes(app, emu, provider, prefix)
    app.router.add_post(f"{prefix}/batches", create)
    app.router.add_get(f"{prefix}/batches", list_batches)
    app.router.add_get(f"{prefix}/batches/{{batch_id}}", retrieve)
    app.router.add_post(f"{prefix}/batches/{{batch_id}}/cancel", cancel)


def add_routes(app: web.Application, emu: Emulator) -> None:
    add_flavour_routes(app, emu, OPENAI)
    add_flavour_routes(app, emu, AZURE)
