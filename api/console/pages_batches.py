"""The Batches pages: document batches with live progress, their failed documents, cancel and
downloads; and a new document batch started from the browser (files and a prompt template).

Everything goes through `/v1/document_batches`: the upload is the API's multipart form, the
progress is its counts (refreshed every second while the batch is open), the failed
documents are its results filtered to `failed` (the first `SHOWN_ERRORS`), and the downloads
are its JSONL and CSV results, streamed through.
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import RedirectResponse, Response

from api.console.base import ConsoleRoute, FormViewerDep, Viewer, ViewerDep, is_htmx, render
from api.console.internal import ApiProblem

router = APIRouter(route_class=ConsoleRoute)

SHOWN_ERRORS = 100
OPEN = ("validating", "in_progress", "finalizing", "cancelling")
STRATEGIES = ("cost", "quality", "balanced", "performance", "round_robin")
DEFAULT_TEMPLATE = "Summarise this document in one sentence:\n\n{document}"


@router.get("/batches")
async def batches_page(request: Request, who: ViewerDep) -> Response:
    listed, models = await _list_and_models(who)
    return render(
        request,
        who,
        "batches.html",
        batches=listed["data"],
        models=models,
        strategies=STRATEGIES,
        default_template=DEFAULT_TEMPLATE,
        open_statuses=OPEN,
    )


async def _list_and_models(who: Viewer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    listed = await who.api.get("/v1/document_batches", {"limit": 50})
    models = await who.api.get("/v1/models")
    return listed, models["data"]


@router.post("/batches")
async def start_batch(
    request: Request,
    who: FormViewerDep,
    prompt: Annotated[str, Form()],
    files: Annotated[list[UploadFile] | None, File()] = None,
    model: Annotated[str, Form()] = "",
    strategy: Annotated[str, Form()] = "",
    max_tokens: Annotated[str, Form()] = "",
    on_too_long: Annotated[str, Form()] = "split",
) -> Response:
    """Hand the files and options to `POST /v1/document_batches`, then show the batch."""
    uploads = [
        ("files", (f.filename or f"file-{n}", await f.read(), f.content_type or "text/plain"))
        for n, f in enumerate(files or [], 1)
        if f.filename  # a browser sends one empty part when no file was chosen
    ]
    form = {"prompt": prompt, "on_too_long": on_too_long}
    form.update(
        {k: v for k, v in (("model", model), ("strategy", strategy), ("max_tokens", max_tokens)) if v}
    )
    created = await who.api.post("/v1/document_batches", data=form, files=uploads or None)
    target = f"/console/batches/{created['id']}"
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _failed_documents(who: Viewer, batch_id: str) -> list[dict[str, Any]]:
    """The first failed documents, read from the results stream (which is then let go)."""
    reply = await who.api.send(
        "GET", f"/v1/document_batches/{batch_id}/results", params={"status": "failed", "format": "jsonl"}
    )
    if reply.status >= 400:
        raise await reply.problem()
    rows: list[dict[str, Any]] = []
    pending = b""
    chunks = reply.chunks
    try:
        async for chunk in chunks:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            rows.extend(json.loads(line) for line in lines if line.strip())
            if len(rows) >= SHOWN_ERRORS:
                break
        else:
            if pending.strip():
                rows.append(json.loads(pending))
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
    return rows[:SHOWN_ERRORS]


async def _progress_context(who: Viewer, batch_id: str) -> dict[str, Any]:
    batch = await who.api.get(f"/v1/document_batches/{batch_id}")
    counts = batch["counts"]
    done_pct = 100 * counts["done"] / counts["total"] if counts["total"] else 100.0
    return {"batch": batch, "done_pct": done_pct, "is_open": batch["status"] in OPEN}


@router.get("/batches/{batch_id}")
async def batch_page(request: Request, batch_id: str, who: ViewerDep) -> Response:
    context = await _progress_context(who, batch_id)
    failed = await _failed_documents(who, batch_id)
    return render(request, who, "batch.html", failed=failed, shown_errors=SHOWN_ERRORS, **context)


@router.get("/batches/{batch_id}/progress")
async def batch_progress(request: Request, batch_id: str, who: ViewerDep) -> Response:
    context = await _progress_context(who, batch_id)
    response = render(request, who, "_batch_progress.html", **context)
    if not context["is_open"]:
        response.headers["HX-Trigger"] = "batch-ended"  # the page reloads its failed documents
    return response


@router.get("/batches/{batch_id}/failed")
async def batch_failed(request: Request, batch_id: str, who: ViewerDep) -> Response:
    failed = await _failed_documents(who, batch_id)
    return render(request, who, "_batch_failed.html", failed=failed, shown_errors=SHOWN_ERRORS)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str, who: FormViewerDep) -> Response:
    await who.api.post(f"/v1/document_batches/{batch_id}/cancel")
    context = await _progress_context(who, batch_id)
    return render(request, who, "_batch_progress.html", **context)


@router.get("/batches/{batch_id}/results.{fmt}")
async def batch_results(batch_id: str, fmt: str, who: ViewerDep) -> Response:
    if fmt not in ("jsonl", "csv"):
        raise ApiProblem(404, {"message": f"no download format {fmt!r}: jsonl or csv", "param": "format"})
    response = await who.api.stream(f"/v1/document_batches/{batch_id}/results", {"format": fmt})
    response.headers["content-disposition"] = f'attachment; filename="{batch_id}.{fmt}"'
    return response
