"""/v1/files, OpenAI-compatible: upload a batch input file, read its object and its content.

An upload is copied from its spooled temporary file into Postgres a part (1 MiB) at a
time, and content is streamed back the same way, so a file's size never sits in memory.
Batch output and error files are written by the workers at finalize and read here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import OwnerDep, SessionDep, StreamSessionDep
from api.downloads import attachment, started_stream
from api.errors import ApiError
from api.idempotency import Idempotency, idempotent
from api.limits import UploadLines
from api.openapi import streamed
from api.schemas.batches import FileObject
from jobstore import batches
from jobstore.batch_models import FILE_PART_BYTES, StoredFile
from jobstore.db import session_factory
from jobstore.result_pages import in_pages

router = APIRouter(prefix="/v1/files", tags=["files"])
PURPOSES = ("batch",)
MAX_FILENAME = 255  # files.filename


def stored_name(filename: str | None) -> str:
    """An upload's name as the files table keeps it: no NUL (Postgres text cannot hold one),
    at most 255 characters (the extension kept)."""
    name = (filename or "").replace("\x00", "") or "upload.jsonl"
    if len(name) > MAX_FILENAME:
        _, dot, ext = name.rpartition(".")
        keep = ext if dot and 0 < len(ext) <= 16 else ""
        name = name[: MAX_FILENAME - len(keep) - 1] + "." + keep if keep else name[:MAX_FILENAME]
    return name


def find_file(session: SessionDep, owner_id: str, file_id: str) -> StoredFile:
    found = batches.owned(session, StoredFile, file_id, owner_id)
    if found is None:
        raise ApiError(404, f"no file {file_id!r} for this API key", param="file_id", code="file_not_found")
    return found  # type: ignore[no-any-return]


@router.post("", response_model=FileObject, responses={400: {"description": "Bad purpose, or empty file"}})
def upload_file(
    session: SessionDep,
    owner: OwnerDep,
    file: Annotated[
        UploadFile, File(description="JSONL: one request per line (OpenAI's batch input format).")
    ],
    purpose: Annotated[str, Form(description="Only 'batch'.")],
    idem: Annotated[Idempotency | None, idempotent("POST /v1/files")],
) -> FileObject:
    if purpose not in PURPOSES:
        raise ApiError(
            400,
            f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}",
            param="purpose",
            code="invalid_value",
        )
    writer = batches.FileWriter(session, owner.id, stored_name(file.filename), purpose)
    counter = UploadLines("file")  # refuses the upload past its size, lines or line length
    while block := file.file.read(FILE_PART_BYTES):
        counter.feed(block)
        writer.write(block)
    stored = writer.close()
    if stored.bytes == 0:
        session.rollback()
        raise ApiError(400, "the file is empty", param="file", code="empty_file")
    created = FileObject.of(stored)
    if idem is not None:  # recorded with the file, in its transaction (api/idempotency.py)
        idem.save(session, 200, created, stored.id)
    session.commit()
    return created


@router.get("/{file_id}", response_model=FileObject, responses={404: {"description": "No such file"}})
def read_file(file_id: str, session: SessionDep, owner: OwnerDep) -> FileObject:
    return FileObject.of(find_file(session, owner.id, file_id))


def _content(file_id: str) -> Iterator[bytes]:
    """The file's parts, each read in a session of its own: a client that reads slowly (or
    stalls) holds no connection between parts. A stored file never changes."""
    with session_factory()() as session:
        numbers = batches.file_part_numbers(session, file_id)
    yield from in_pages(
        numbers, lambda session, seqs: [batches.file_part(session, file_id, seq) for seq in seqs], 1
    )


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file's bytes",
            "content": streamed("application/octet-stream", "the file as stored (JSONL)"),
        },
        404: {"description": "No such file for this key"},
    },
)
def file_content(file_id: str, session: StreamSessionDep, owner: OwnerDep) -> StreamingResponse:
    """The file's bytes, streamed a part at a time."""
    stored = find_file(session, owner.id, file_id)
    return started_stream(
        _content(stored.id),
        media_type="application/octet-stream",
        headers={"Content-Length": str(stored.bytes), "Content-Disposition": attachment(stored.filename)},
    )
