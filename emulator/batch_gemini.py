"""Gemini's Batch Mode (the Gemini Developer API's), as the emulator speaks it to google-genai.

Served under the Gemini prefix the SDK is pointed at (`/gemini/{version}`):

    POST   .../models/{model}:batchGenerateContent   create from inlined requests
    GET    .../batches                                list (`pageSize`, `pageToken`)
    GET    .../batches/{id}                           get
    POST   .../batches/{id}:cancel                    cancel
    DELETE .../batches/{id}                           delete

A batch is a long-running operation: `name` ("batches/..."), `done`, and `metadata` with
`state` (BATCH_STATE_PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED, EXPIRED), times,
`batchStats` and, once ended, `output.inlinedResponses` in request order: a
`GenerateContentResponse` or a Google `error` per request, with the request's `metadata`.
Requests a cancelled or expired batch never ran carry a CANCELLED or DEADLINE_EXCEEDED error
(the emulator's choice: Google does not document those entries). Inlined requests may total
20 MB; a batch expires after 48 hours. Input files (`fileName`) are not emulated.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from emulator.batch_config import BatchSettings
from emulator.batch_engine import Batch, BatchLine, LineResult, LineRunner
from emulator.batch_store import new_id, record, rfc3339, store_for
from emulator.core import Emulator
from emulator.gemini_format import error_body, parse_gemini, response_body

MAX_BYTES = 20 * 1024 * 1024
WINDOW_S = 48 * 3600.0
STATES = {
    "validating": "BATCH_STATE_PENDING",
    "completed": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "expired": "BATCH_STATE_EXPIRED",
    "cancelled": "BATCH_STATE_CANCELLED",
}  # every other status is BATCH_STATE_RUNNING
UNRUN = {"cancelled": (499, "The request was cancelled."), "expired": (504, "The batch expired first.")}
TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1main."


def _google_error(status: int, message: str) -> dict[str, Any]:
    error: dict[str, Any] = error_body(status, message)["error"]
    return error


def _reply(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


def line_runner(emu: Emulator) -> LineRunner:
    def run(line: BatchLine, fail: bool) -> LineResult:
        request_id = new_id("emu-gemini-", 16)
        if fail:
            return LineResult(500, _google_error(500, "Internal error encountered."), request_id)
        if not line.request.get("contents"):
            message = "* GenerateContentRequest.contents: contents is not specified"
            return LineResult(400, _google_error(400, message), request_id)
        answer = emu.answer(parse_gemini(line.request, line.model))
        body = response_body(answer, line.model)
        return LineResult(200, body, answer.request_id, answer.input_tokens, answer.output_tokens)

    return run


def _inlined(batch: Batch) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for line, request in zip(batch.lines, batch.meta["requests"], strict=True):
        row: dict[str, Any]
        if line.result is None:
            status, message = UNRUN.get(batch.status, (499, "The request was not run."))
            row = {"error": _google_error(status, message)}
        elif line.result.ok:
            row = {"response": line.result.body}
        else:
            row = {"error": line.result.body}
        if "metadata" in request:
            row["metadata"] = request["metadata"]
        rows.append(row)
    return rows


def batch_json(batch: Batch) -> dict[str, Any]:
    ended = batch.terminal
    latest = max(batch.events.values(), default=batch.created_wall)
    metadata: dict[str, Any] = {
        "@type": TYPE_PREFIX + "GenerateContentBatch",
        "model": f"models/{batch.model}",
        "displayName": batch.meta["display_name"],
        "state": STATES.get(batch.status, "BATCH_STATE_RUNNING"),
        "createTime": rfc3339(batch.created_wall),
        "updateTime": rfc3339(latest),
        # proto3 JSON spells int64 as strings
        "batchStats": {
            "requestCount": str(len(batch.lines)),
            "successfulRequestCount": str(batch.succeeded),
            "failedRequestCount": str(batch.errored),
            "pendingRequestCount": str(len(batch.lines) - batch.done),
        },
    }
    body: dict[str, Any] = {"name": f"batches/{batch.id}", "metadata": metadata, "done": ended}
    if ended:
        metadata["endTime"] = rfc3339(latest)
        output = {"inlinedResponses": {"inlinedResponses": _inlined(batch)}}
        metadata["output"] = output
        body["response"] = {"@type": TYPE_PREFIX + "GenerateContentBatchOutput", **output}
    return body


def _read_requests(raw: bytes, settings: BatchSettings) -> list[dict[str, Any]] | web.Response:
    """The inlined requests of a create call, or the error the API answers."""
    if len(raw) > (settings.max_bytes or MAX_BYTES):
        return _reply(
            400, f"Request payload size exceeds the limit: {settings.max_bytes or MAX_BYTES} bytes."
        )
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        return _reply(400, "Invalid JSON payload received.")
    source = ((body.get("batch") if isinstance(body, dict) else None) or {}).get("inputConfig") or {}
    if "fileName" in source:
        return _reply(400, "The emulator's Gemini batches take inlined requests only, not an input file.")
    requests = (source.get("requests") or {}).get("requests")
    if not isinstance(requests, list) or not requests:
        return _reply(400, "* BatchGenerateContentRequest.batch.input_config: requests is not specified")
    if settings.max_lines is not None and len(requests) > settings.max_lines:
        return _reply(400, f"A batch holds at most {settings.max_lines} requests, not {len(requests)}.")
    if not all(isinstance(r, dict) and isinstance(r.get("request"), dict) for r in requests):
        return _reply(400, "* InlinedRequest.request: request is not specified")
    return requests


def add_routes(app: web.Application, emu: Emulator) -> None:
    store = store_for(emu)

    def refused(request: web.Request) -> web.Response | None:
        if request.headers.get("x-goog-api-key") or request.query.get("key"):
            return None
        return _reply(
            403, "Method doesn't allow unregistered callers (callers without established identity)."
        )

    async def create(request: web.Request, model: str) -> web.StreamResponse:
        if (refusal := refused(request)) is not None:
            return refusal
        settings = emu.config.batch.for_provider("gemini")
        raw = await request.read()
        requests = _read_requests(raw, settings)
        if isinstance(requests, web.Response):
            return requests
        model = model.removeprefix("models/")
        if settings.models is not None and model not in settings.models:
            return _reply(404, f"models/{model} is not found for API version v1beta.")
        lines = [
            BatchLine(
                str((r.get("metadata") or {}).get("key", i)),
                str(r["request"].get("model") or model).removeprefix("models/"),
                r["request"],
            )
            for i, r in enumerate(requests)
        ]
        meta = {"display_name": json.loads(raw)["batch"].get("displayName") or "", "requests": requests}
        batch = store.create(
            emu, "gemini", new_id("", 20).lower(), lines, line_runner(emu), WINDOW_S, model=model, meta=meta
        )
        record(emu, "gemini", "batch_create", model, batch.id)
        return web.json_response(batch_json(batch))

    def found(request: web.Request, kind: str) -> Batch | web.Response:
        batch_id = request.match_info["name"].removesuffix(":cancel")
        batch = store.get(batch_id, "gemini")
        record(emu, "gemini", kind, batch.model if batch else "", batch_id, 200 if batch else 404)
        return batch if batch is not None else _reply(404, f"Batch batches/{batch_id} not found.")

    async def get(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        batch = found(request, "batch_poll")
        return batch if isinstance(batch, web.Response) else web.json_response(batch_json(batch))

    async def cancel(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        if not request.match_info["name"].endswith(":cancel"):
            return _reply(404, "unknown method")
        batch = found(request, "batch_cancel")
        if isinstance(batch, web.Response):
            return batch
        if not batch.cancel(store.clock()):
            return _reply(400, f"Batch batches/{batch.id} has already ended and cannot be cancelled.")
        return web.json_response({})

    async def delete(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        batch = found(request, "batch_delete")
        if isinstance(batch, web.Response):
            return batch
        del store.batches[batch.id]
        return web.json_response({})

    async def listing(request: web.Request) -> web.Response:
        if (refusal := refused(request)) is not None:
            return refusal
        batches = store.listed("gemini")
        size = max(1, min(1000, int(request.query.get("pageSize", 50))))
        start = int(request.query.get("pageToken") or 0)
        page = batches[start : start + size]
        body: dict[str, Any] = {"operations": [batch_json(b) for b in page]}
        if start + size < len(batches):
            body["nextPageToken"] = str(start + size)
        record(emu, "gemini", "batch_list")
        return web.json_response(body)

    async def create_route(request: web.Request) -> web.StreamResponse:
        return await create(request, request.match_info["model"])

    app.router.add_post("/gemini/{version}/models/{model}:{action:batchGenerateContent}", create_route)
    app.router.add_get("/gemini/{version}/batches", listing)
    app.router.add_get("/gemini/{version}/batches/{name}", get)
    app.router.add_post("/gemini/{version}/batches/{name}", cancel)
    app.router.add_delete("/gemini/{version}/batches/{name}", delete)
