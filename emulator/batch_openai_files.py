"""OpenAI's Files API (and Azure OpenAI's), as the emulator speaks it for batches.

Served under a prefix (`/openai/v1`, or `/azure/openai` where the `api-version` query
parameter the `AzureOpenAI` client always sends is required):

    POST   {prefix}/files                 upload (multipart: `file`, `purpose`)
    GET    {prefix}/files                 list (newest first; `purpose`, `after`, `limit`)
    GET    {prefix}/files/{id}            retrieve
    GET    {prefix}/files/{id}/content    download
    DELETE {prefix}/files/{id}            delete

A `purpose=batch` upload must be named `.jsonl`, as the real API requires; its lines are
only checked when a batch is created from it. Files live in the batch store, apart per
provider. This module also holds the error and list helpers the Batches API shares.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from emulator.batch_store import StoredFile, record, store_for
from emulator.core import Emulator, Fault
from emulator.openai_format import error_response

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_FILE_LIFETIME_S = 30 * 24 * 3600  # batch files expire after 30 days by default


def bad(message: str, code: str = "invalid_request_error") -> web.Response:
    return error_response(Fault(400, code, message))


def missing(what: str, ident: str) -> web.Response:
    return error_response(Fault(404, "not_found", f"No such {what} object: {ident}"))


def refusal(request: web.Request, provider: str) -> web.Response | None:
    """Azure answers 404 to any call without `api-version`, as its online route does."""
    if provider == "azure" and "api-version" not in request.query:
        return error_response(Fault(404, "404", "Resource not found: api-version query parameter missing"))
    return None


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """One page of a list, in the order given, after the item `after` (OpenAI's cursor)."""
    start = next((i + 1 for i, item in enumerate(items) if item["id"] == after), 0) if after else 0
    rows = items[start : start + limit]
    return {
        "object": "list",
        "data": rows,
        "first_id": rows[0]["id"] if rows else None,
        "last_id": rows[-1]["id"] if rows else None,
        "has_more": start + limit < len(items),
    }


def file_json(stored: StoredFile) -> dict[str, Any]:
    lifetime = BATCH_FILE_LIFETIME_S if stored.purpose.startswith("batch") else None
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.data),
        "created_at": stored.created_at,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
        "status_details": None,
        "expires_at": stored.created_at + lifetime if lifetime else None,
    }


def add_file_routes(app: web.Application, emu: Emulator, provider: str, prefix: str) -> None:
    store = store_for(emu)

    async def upload(request: web.Request) -> web.Response:
        if (refused := refusal(request, provider)) is not None:
            return refused
        form = await request.post()
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, web.FileField):
            return bad("Missing required parameter: 'file'.")
        if purpose not in PURPOSES:
            return bad(f"Invalid value for 'purpose': {purpose!r}.", "invalid_value")
        if purpose == "batch" and not upload.filename.endswith(".jsonl"):
            return bad("Invalid file format for Batch API. Must be .jsonl")
        stored = store.add_file(provider, upload.filename, str(purpose), upload.file.read())
        record(emu, provider, "file_upload")
        return web.json_response(file_json(stored))

    async def listing(request: web.Request) -> web.Response:
        if (refused := refusal(request, provider)) is not None:
            return refused
        purpose = request.query.get("purpose")
        found = [f for f in store.files.values() if f.provider == provider and purpose in (None, f.purpose)]
        rows = [file_json(f) for f in sorted(found, key=lambda f: f.created_at, reverse=True)]
        record(emu, provider, "file_list")
        limit = int(request.query.get("limit", 10_000))
        return web.json_response(page(rows, request.query.get("after"), limit))

    async def one_file(request: web.Request) -> web.StreamResponse:
        if (refused := refusal(request, provider)) is not None:
            return refused
        file_id = request.match_info["file_id"]
        stored = store.file(file_id, provider)
        if request.path.endswith("/content"):
            kind = "file_download"
        else:
            kind = "file_delete" if request.method == "DELETE" else "file_retrieve"
        record(emu, provider, kind, status=200 if stored else 404)
        if stored is None:
            return missing("File", file_id)
        if kind == "file_download":
            return web.Response(body=stored.data, content_type="application/octet-stream")
        if kind == "file_delete":
            del store.files[file_id]
            return web.json_response({"id": file_id, "object": "file", "deleted": True})
        return web.json_response(file_json(stored))

    app.router.add_post(f"{prefix}/files", upload)
    app.router.add_get(f"{prefix}/files", listing)
    app.router.add_get(f"{prefix}/files/{{file_id}}", one_file)
    app.router.add_delete(f"{prefix}/files/{{file_id}}", one_file)
    app.router.add_get(f"{prefix}/files/{{file_id}}/content", one_file)
