"""Anthropic's Message Batches API, as the emulator speaks it.

Served under the Anthropic prefix the SDK is pointed at (`/anthropic`):

    POST   /anthropic/v1/messages/batches               create (`requests`: `custom_id` + `params`)
    GET    /anthropic/v1/messages/batches[/{id}]        list (newest first; `before_id`, `after_id`,
                                                        `limit`), retrieve
    POST   /anthropic/v1/messages/batches/{id}/cancel   cancel
    DELETE /anthropic/v1/messages/batches/{id}          delete an ended batch
    GET    /anthropic/v1/messages/batches/{id}/results  JSONL results, once ended (`results_url`)

The request list itself is checked at creation (at least one request, at most 100,000 and
256 MB, `custom_id`s unique and of 1-64 letters, digits, `_` or `-`), as the real API does;
each request's `params` is checked only when it runs, and a bad one ends `errored` with an
`invalid_request_error`. `processing_status` is `in_progress`, `canceling`, then `ended`.
As Anthropic documents, `request_counts` shows every request as `processing` until the
batch ends, and then splits them into succeeded / errored / canceled / expired; the
emulator's `GET /_emulator/batches` shows progress mid-way.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from emulator.anthropic_format import BadRequest, error_response, message_body, parse_anthropic
from emulator.batch_config import BatchSettings
from emulator.batch_engine import Batch, BatchLine, LineResult, LineRunner
from emulator.batch_store import new_id, record, rfc3339, store_for
from emulator.core import Emulator, Fault

PREFIX = "/anthropic/v1/messages/batches"
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
WINDOW_S = 24 * 3600.0
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
PROCESSING_STATUS = {"cancelling": "canceling"}  # every other unfinished status is in_progress


def _bad(message: str, status: int = 400) -> web.Response:
    return error_response(Fault(status, "invalid_request_error", message))


def _error_result(kind: str, message: str, request_id: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def line_runner(emu: Emulator, settings: BatchSettings) -> LineRunner:
    """Answers one request of a batch as `POST /v1/messages` would, or errors it."""

    def run(line: BatchLine, fail: bool) -> LineResult:
        request_id = new_id("req_", 24)
        params = line.request
        if fail:
            return LineResult(
                500, _error_result("api_error", "Internal server error", request_id), request_id
            )
        missing = [name for name in ("model", "max_tokens", "messages") if name not in params]
        if missing:
            body = _error_result("invalid_request_error", f"{missing[0]}: Field required", request_id)
            return LineResult(400, body, request_id)
        if settings.models is not None and line.model not in settings.models:
            body = _error_result("not_found_error", f"model: {line.model}", request_id)
            return LineResult(404, body, request_id)
        try:
            conv = parse_anthropic(params, line.model)
        except BadRequest as exc:
            return LineResult(400, _error_result("invalid_request_error", str(exc), request_id), request_id)
        answer = emu.answer(conv)
        return LineResult(
            200,
            message_body(answer, line.model),
            answer.request_id,
            answer.input_tokens,
            answer.output_tokens,
        )

    return run


def batch_json(batch: Batch, base_url: str) -> dict[str, Any]:
    ended = batch.terminal
    undone = len(batch.lines) - batch.done
    if ended:
        counts = {
            "processing": 0,
            "succeeded": batch.succeeded,
            "errored": batch.errored,
            "canceled": undone if batch.status == "cancelled" else 0,
            "expired": undone if batch.status == "expired" else 0,
        }
    else:
        counts = {"processing": len(batch.lines), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    deadline = batch.wall(batch.deadline) if batch.deadline != float("inf") else batch.created_wall + WINDOW_S
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": "ended" if ended else PROCESSING_STATUS.get(batch.status, "in_progress"),
        "request_counts": counts,
        "created_at": rfc3339(batch.created_wall),
        "expires_at": rfc3339(deadline),
        "ended_at": rfc3339(batch.events.get(batch.status)) if ended else None,
        "cancel_initiated_at": rfc3339(batch.events.get("cancelling")),
        "archived_at": None,
        "results_url": f"{base_url}{PREFIX}/{batch.id}/results" if ended else None,
    }


def result_line(batch: Batch, index: int) -> dict[str, Any]:
    line = batch.lines[index]
    result: dict[str, Any]
    if line.result is None:
        result = {"type": "canceled" if batch.status == "cancelled" else "expired"}
    elif line.result.ok:
        result = {"type": "succeeded", "message": line.result.body}
    else:
        result = {"type": "errored", "error": line.result.body}
    return {"custom_id": line.custom_id, "result": result}


def _check_requests(requests: Any, max_requests: int) -> str | None:
    if not isinstance(requests, list) or not requests:
        return "requests: List should have at least 1 item after validation, not 0"
    if len(requests) > max_requests:
        return f"requests: a batch holds at most {max_requests} requests, not {len(requests)}"
    seen: set[str] = set()
    for i, request in enumerate(requests):
        if not isinstance(request, dict) or not isinstance(request.get("params"), dict):
            return f"requests.{i}.params: Field required"
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            return f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return (
                f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}'; each must be unique in a batch"
            )
        seen.add(custom_id)
    return None


def add_routes(app: web.Application, emu: Emulator) -> None:
    store = store_for(emu)

    def base_url(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def refused(request: web.Request) -> web.Response | None:
        if not request.headers.get("x-api-key") and not request.headers.get("authorization"):
            return error_response(Fault(401, "invalid_api_key", "x-api-key header is required"))
        if not request.headers.get("anthropic-version"):
            return _bad("anthropic-version: header is required")
        return None

    def found(request: web.Request, kind: str) -> Batch | web.Response:
        batch_id = request.match_info["batch_id"]
        batch = store.get(batch_id, "anthropic")
        record(emu, "anthropic", kind, batch.model if batch else "", batch_id, 200 if batch else 404)
        if batch is None:
            return error_response(Fault(404, "not_found_error", f"Message Batch {batch_id} not found."))
        return batch

    async def create(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        settings = emu.config.batch.for_provider("anthropic")
        raw = await request.read()
        if len(raw) > (settings.max_bytes or MAX_BYTES):
            return error_response(
                Fault(413, "request_too_large", "Request exceeds the maximum allowed size.")
            )
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return _bad("There was an issue with your request body")
        requests = body.get("requests") if isinstance(body, dict) else None
        if (problem := _check_requests(requests, settings.max_lines or MAX_REQUESTS)) is not None:
            return _bad(problem)
        assert isinstance(requests, list)
        lines = [BatchLine(r["custom_id"], str(r["params"].get("model", "")), r["params"]) for r in requests]
        models = sorted({line.model for line in lines})
        batch = store.create(
            emu,
            "anthropic",
            new_id("msgbatch_01"),
            lines,
            line_runner(emu, settings),
            WINDOW_S,
            model=",".join(models),
        )
        record(emu, "anthropic", "batch_create", batch.model, batch.id)
        return web.json_response(batch_json(batch, base_url(request)))

    async def retrieve(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        batch = found(request, "batch_poll")
        return (
            batch
            if isinstance(batch, web.Response)
            else web.json_response(batch_json(batch, base_url(request)))
        )

    async def listing(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        batches = store.listed("anthropic")
        ids = [b.id for b in batches]
        limit = max(1, min(1000, int(request.query.get("limit", 20))))
        # Newest first: after_id pages towards older batches, before_id towards newer ones.
        before = request.query.get("before_id")
        if before in ids:
            stop = ids.index(before)
            start = max(0, stop - limit)
            has_more = start > 0
        else:
            after = request.query.get("after_id")
            start = ids.index(after) + 1 if after in ids else 0
            stop = min(len(ids), start + limit)
            has_more = stop < len(ids)
        page = batches[start:stop]
        record(emu, "anthropic", "batch_list")
        return web.json_response(
            {
                "data": [batch_json(b, base_url(request)) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def cancel(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        batch = found(request, "batch_cancel")
        if isinstance(batch, web.Response):
            return batch
        if not batch.cancel(store.clock()):
            return _bad(f"Message Batch {batch.id} has already ended and cannot be canceled.")
        return web.json_response(batch_json(batch, base_url(request)))

    async def delete(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        batch = found(request, "batch_delete")
        if isinstance(batch, web.Response):
            return batch
        if not batch.terminal:
            return _bad(f"Message Batch {batch.id} is still processing; cancel it before deleting it.")
        del store.batches[batch.id]
        return web.json_response({"id": batch.id, "type": "message_batch_deleted"})

    async def results(request: web.Request) -> web.StreamResponse:
        if (refusal := refused(request)) is not None:
            return refusal
        batch = found(request, "batch_results")
        if isinstance(batch, web.Response):
            return batch
        if not batch.terminal:
            return _bad(f"Message Batch {batch.id} has not yet ended; its results are not available.")
        data = "".join(json.dumps(result_line(batch, i)) + "\n" for i in range(len(batch.lines)))
        return web.Response(body=data.encode(), content_type="application/binary")

    app.router.add_post(PREFIX, create)
    app.router.add_get(PREFIX, listing)
    app.router.add_get(f"{PREFIX}/{{batch_id}}", retrieve)
    app.router.add_delete(f"{PREFIX}/{{batch_id}}", delete)
    app.router.add_post(f"{PREFIX}/{{batch_id}}/cancel", cancel)
    app.router.add_get(f"{PREFIX}/{{batch_id}}/results", results)
