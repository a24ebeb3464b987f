"""The console's router: every page under /console, and its static files (shipped in the
package: htmx, the stylesheet and the one script; nothing is loaded from elsewhere)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response

from api.console import pages_admin, pages_auth, pages_batches, pages_compare, pages_jobs, pages_models
from api.console.base import HERE

router = APIRouter(prefix="/console", include_in_schema=False)
STATIC = HERE / "static"
STATIC_FILES = {p.name: p for p in STATIC.iterdir() if p.is_file()} if STATIC.is_dir() else {}
MEDIA = {".js": "text/javascript", ".css": "text/css"}


@router.get("")
@router.get("/")
def console_home() -> Response:
    return RedirectResponse("/console/models", status_code=303)


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    path = STATIC_FILES.get(name)  # only the files shipped: no path from the URL reaches the disk
    if path is None:
        return Response(f"no static file {name!r}", status_code=404, media_type="text/plain")
    return FileResponse(
        path,
        media_type=MEDIA.get(path.suffix, "application/octet-stream"),
        headers={"Cache-Control": "max-age=3600"},
    )


for pages in (pages_auth, pages_models, pages_compare, pages_jobs, pages_batches, pages_admin):
    router.include_router(pages.router)
