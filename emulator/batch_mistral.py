"""Mistral's batch jobs and the Files API they read and write, as the emulator speaks them.

Served under the Mistral prefix the SDK is pointed at (`/mistral`):

    POST   /mistral/v1/files                    upload (multipart: `file`, `purpose`)
    GET    /mistral/v1/files[/{id}]             list, retrieve
    GET    /mistral/v1/files/{id}/content       download
    DELETE /mistral/v1/files/{id}               delete
    POST   /mistral/v1/batch/jobs               create (`input_files` or inline `requests`,
                                                `endpoint`, `model`, `metadata`, `timeout_hours`)
    GET    /mistral/v1/batch/jobs[/{id}]        list (`page`, `page_size`), get (`inline=true`
                                                puts the results in `outputs`)
    POST   /mistral/v1/batch/jobs/{id}/cancel   cancel
    DELETE /mistral/v1/batch/jobs/{id}          delete

Input lines are `{"custom_id", "body"}`; the job names the model. Statuses: QUEUED, RUNNING,
SUCCESS, FAILED (a line that is not JSON or has no `body`: `errors` say which), and
TIMEOUT_EXCEEDED after `timeout_hours` (or `BatchSettings.expire_after_s`),
CANCELLATION_REQUESTED -> CANCELLED. Results are OpenAI-shaped lines (`custom_id`,
`response.status_code`, `response.body`, `error`) in `output_file` and `error_file`; lines
a job never ran go to the error file. Only `/v1/chat/completions` is emulated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from emulator.batch_engine import Batch, BatchLine, LineResult, LineRunner
from emulator.batch_store import BatchStore, StoredFile, record, store_for
from emulator.core import Emulator, Fault
from emulator.mistral_format import completion_body, error_response, parse_mistral

PREFIX = "/mistral/v1"
STATUSES = {
    "validating": "QUEUED",
    "completed": "SUCCESS",
    "failed": "FAILED",
    "expired": "TIMEOUT_EXCEEDED",
    "cancelling": "CANCELLATION_REQUESTED",
    "cancelled": "CANCELLED",
}  # every other status is RUNNING
SAMPLE_TYPES = {"batch": "batch_request", "batch_result": "batch_result", "batch_error": "batch_error"}


def _bad(message: str, status: int = 400) -> web.Response:
    return error_response(Fault(status, "invalid_request_error", message))


def _error_body(message: str, kind: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": None}


def line_runner(emu: Emulator) -> LineRunner:
    def run(line: BatchLine, fail: bool) -> LineResult:
        request_id = uuid.uuid4().hex
        if fail:
            return LineResult(500, _error_body("Internal server error", "internal_server_error"), request_id)
        if not line.request.get("messages"):
            return LineResult(
                422, _error_body("messages: Field required", "invalid_request_error"), request_id
            )
        answer = emu.answer(parse_mistral(line.request, line.model))
        body = completion_body(answer, line.model)
        return LineResult(200, body, answer.request_id, answer.input_tokens, answer.output_tokens)

    return run


def read_lines(texts: list[str], model: str) -> tuple[list[BatchLine], list[dict[str, Any]]]:
    """The lines of the input files, and the job's `errors` (message + count) if any is bad."""
    lines: list[BatchLine] = []
    problems: dict[str, int] = {}
    for raw in (line for text in texts for line in text.splitlines() if line.strip()):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("body"), dict):
            message = "Invalid line: each line must be a JSON object with a `body` object."
            problems[message] = problems.get(message, 0) + 1
            continue
        custom_id = str(obj.get("custom_id", len(lines)))
        lines.append(BatchLine(custom_id, str(obj["body"].get("model") or model), obj["body"]))
    if not lines and not problems:
        problems["The input files contain no request."] = 1
    return lines, [{"message": m, "count": n} for m, n in problems.items()]


def _result_row(line: BatchLine, unrun: str) -> dict[str, Any]:
    if line.result is None:
        return {
            "id": uuid.uuid4().hex,
            "custom_id": line.custom_id,
            "response": None,
            "error": {"message": unrun},
        }
    response = {"status_code": line.result.status, "body": line.result.body}
    return {"id": line.result.request_id, "custom_id": line.custom_id, "response": response, "error": None}


def _results(batch: Batch) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    unrun = "The job was cancelled first." if batch.status == "cancelled" else "The job timed out first."
    rows = [_result_row(line, unrun) for line in batch.lines] if batch.terminal else []
    ok = [row for row in rows if row["response"] is not None and row["response"]["status_code"] == 200]
    return ok, [row for row in rows if row not in ok]


def _result_files(batch: Batch, store: BatchStore) -> None:
    if "output_file" in batch.meta or not batch.terminal or batch.status == "failed":
        return
    ok, failed = _results(batch)
    for key, purpose, rows in (("output_file", "batch_result", ok), ("error_file", "batch_error", failed)):
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        name = f"{batch.id}_{purpose}.jsonl"
        batch.meta[key] = (
            store.add_file("mistral", name, purpose, data, file_id=str(uuid.uuid4())).id if rows else None
        )


def job_json(batch: Batch, store: BatchStore, inline: bool = False) -> dict[str, Any]:
    _result_files(batch, store)
    started = batch.events.get("in_progress")
    ended = batch.events.get(batch.status) if batch.terminal else None
    body = {
        "id": batch.id,
        "object": "batch",
        "input_files": batch.meta["input_files"],
        "metadata": batch.meta["metadata"],
        "endpoint": batch.meta["endpoint"],
        "model": batch.model,
        "errors": batch.invalid,
        "status": STATUSES.get(batch.status, "RUNNING"),
        "created_at": int(batch.created_wall),
        "total_requests": len(batch.lines),
        "completed_requests": batch.done,
        "succeeded_requests": batch.succeeded,
        "failed_requests": batch.errored,
        "output_file": batch.meta.get("output_file"),
        "error_file": batch.meta.get("error_file"),
        "started_at": int(started) if started is not None else None,
        "completed_at": int(ended) if ended is not None else None,
    }
    if inline:
        ok, failed = _results(batch)
        body["outputs"] = ok + failed if batch.terminal else None
    return body


def file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.data),
        "created_at": stored.created_at,
        "filename": stored.filename,
        "purpose": "batch",
        "sample_type": SAMPLE_TYPES.get(stored.purpose, "batch_request"),
        "source": "upload" if stored.purpose == "batch" else "mistral",
        "num_lines": stored.data.count(b"\n"),
        "mimetype": "application/jsonl",
        "deleted": False,
    }


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def keyed(handler: Handler) -> Handler:
    """The handler, behind the bearer key check the online route makes."""

    async def checked(request: web.Request) -> web.StreamResponse:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return error_response(Fault(401, "invalid_api_key", "Unauthorized"))
        return await handler(request)

    return checked


def add_routes(app: web.Application, emu: Emulator) -> None:
    store = store_for(emu)

    async def upload(request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return _bad("file: Field required", 422)
        stored = store.add_file(
            "mistral", upload.filename, "batch", upload.file.read(), file_id=str(uuid.uuid4())
        )
        record(emu, "mistral", "file_upload")
        return web.json_response(file_json(stored))

    async def one_file(request: web.Request) -> web.StreamResponse:
        stored = store.file(request.match_info["file_id"], "mistral")
        download = request.path.endswith("/content")
        kind = (
            "file_download" if download else "file_delete" if request.method == "DELETE" else "file_retrieve"
        )
        record(emu, "mistral", kind, status=200 if stored else 404)
        if stored is None:
            return _bad(f"File {request.match_info['file_id']} not found", 404)
        if download:
            return web.Response(body=stored.data, content_type="application/octet-stream")
        if request.method == "DELETE":
            del store.files[stored.id]
            return web.json_response({"id": stored.id, "object": "file", "deleted": True})
        return web.json_response(file_json(stored))

    async def list_files(_: web.Request) -> web.Response:
        rows = [file_json(f) for f in store.files.values() if f.provider == "mistral"]
        return web.json_response({"data": rows, "object": "list", "total": len(rows)})

    async def create(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _bad("Invalid JSON body")
        if body.get("endpoint") != "/v1/chat/completions":
            return _bad(f"The emulator batches /v1/chat/completions only, not {body.get('endpoint')!r}")
        model, file_ids = body.get("model"), body.get("input_files") or []
        if not model:
            return _bad("model: a batch job needs a model", 422)
        settings = emu.config.batch.for_provider("mistral")
        if settings.models is not None and model not in settings.models:
            return _bad(f"Invalid model: {model}")
        texts: list[str] = []
        for file_id in file_ids:
            if (stored := store.file(file_id, "mistral")) is None:
                return _bad(f"File {file_id} not found", 404)
            texts.append(stored.data.decode("utf-8", errors="replace"))
        texts.append("".join(json.dumps(r) + "\n" for r in body.get("requests") or []))
        lines, invalid = read_lines(texts, str(model))
        if settings.max_lines is not None and len(lines) > settings.max_lines:
            invalid.append({"message": f"A batch holds at most {settings.max_lines} requests.", "count": 1})
        meta = {"input_files": file_ids, "endpoint": body["endpoint"], "metadata": body.get("metadata")}
        window = float(body.get("timeout_hours") or 24) * 3600
        batch = store.create(
            emu,
            "mistral",
            str(uuid.uuid4()),
            lines,
            line_runner(emu),
            window,
            model=str(model),
            invalid=invalid,
            meta=meta,
        )
        record(emu, "mistral", "batch_create", batch.model, batch.id)
        return web.json_response(job_json(batch, store))

    def found(request: web.Request, kind: str) -> Batch | web.Response:
        batch_id = request.match_info["job_id"]
        batch = store.get(batch_id, "mistral")
        record(emu, "mistral", kind, batch.model if batch else "", batch_id, 200 if batch else 404)
        return batch if batch is not None else _bad(f"Batch job {batch_id} not found", 404)

    async def get(request: web.Request) -> web.Response:
        batch = found(request, "batch_poll")
        if isinstance(batch, web.Response):
            return batch
        return web.json_response(job_json(batch, store, inline=request.query.get("inline") == "true"))

    async def cancel(request: web.Request) -> web.Response:
        batch = found(request, "batch_cancel")
        if isinstance(batch, web.Response):
            return batch
        if not batch.cancel(store.clock()):
            return _bad(f"Batch job {batch.id} has already ended and cannot be cancelled")
        return web.json_response(job_json(batch, store))

    async def delete(request: web.Request) -> web.Response:
        batch = found(request, "batch_delete")
        if isinstance(batch, web.Response):
            return batch
        del store.batches[batch.id]
        return web.json_response({"id": batch.id, "object": "batch", "deleted": True})

    async def listing(request: web.Request) -> web.Response:
        jobs = store.listed("mistral")
        size = max(1, int(request.query.get("page_size", 100)))
        start = int(request.query.get("page", 0)) * size
        record(emu, "mistral", "batch_list")
        data = [job_json(b, store) for b in jobs[start : start + size]]
        return web.json_response({"data": data, "object": "list", "total": len(jobs)})

    for method, path, handler in (
        ("POST", "/files", upload),
        ("GET", "/files", list_files),
        ("GET", "/files/{file_id}", one_file),
        ("DELETE", "/files/{file_id}", one_file),
        ("GET", "/files/{file_id}/content", one_file),
        ("POST", "/batch/jobs", create),
        ("GET", "/batch/jobs", listing),
        ("GET", "/batch/jobs/{job_id}", get),
        ("DELETE", "/batch/jobs/{job_id}", delete),
        ("POST", "/batch/jobs/{job_id}/cancel", cancel),
    ):
        app.router.add_route(method, PREFIX + path, keyed(handler))
