"""Turning an upload into a batch's jobs: a line at a time, inserted in bulk, dispatched in windows.

The upload is read from its spooled temporary file (or from the stored file's parts) one
line at a time; rows go to Postgres a thousand per INSERT; after the one commit, job ids go
to the dispatcher a hundred per message. Memory holds one chunk of rows and the list of ids.

A bad line (not JSON, no text, a duplicate id, an unknown model, ...) becomes a job born
`failed` that carries its line number and the reason: it fails alone, the rest run, and it
shows in the batch's counts and error file like any other failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from api.errors import ApiError
from api.limits import check_metadata
from api.schemas.openai_compat import parse_completion
from jobstore.batch_models import Batch
from jobstore.batches import BulkJobWriter, job_row
from routing.catalog import Catalog
from routing.documents import Window, fill, part_text, split_document, user_request

MAX_ID_LENGTH = 255
MAX_LISTED_ERRORS = 100


@dataclass
class NativeOptions:
    """How every document of a native batch is asked and routed."""

    prompt: str
    model: str | None
    strategy: str
    routing: dict[str, Any]
    max_tokens: int | None
    deadline_s: float | None
    on_too_long: str  # split | reject
    window: Window

    def deadline_at(self) -> datetime | None:
        return datetime.now(UTC) + timedelta(seconds=self.deadline_s) if self.deadline_s else None


@dataclass
class Intake:
    """Adds lines to a batch, remembering ids already used so a duplicate fails alone."""

    batch: Batch
    writer: BulkJobWriter
    seen: set[str] = field(default_factory=set)
    accepted: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_LISTED_ERRORS

    @property
    def total(self) -> int:
        return self.accepted + self.rejected

    def fail_line(self, line: int, custom_id: str | None, code: str, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(
                {"code": code, "message": f"line {line}: {message}", "param": None, "line": line}
            )
        self.writer.add(
            job_row(
                self.batch,
                request={},
                custom_id=custom_id,
                line_number=line,
                model=None,
                strategy="none",
                error=(code, f"line {line}: {message}"),
            )
        )

    def claim_id(self, line: int, custom_id: str) -> bool:
        if len(custom_id) > MAX_ID_LENGTH:
            self.fail_line(line, custom_id[:MAX_ID_LENGTH], "invalid_line", f"id longer than {MAX_ID_LENGTH}")
            return False
        if custom_id in self.seen:
            self.fail_line(line, custom_id, "invalid_line", f"duplicate id {custom_id!r}")
            return False
        self.seen.add(custom_id)
        return True


# ---------------------------------------------------------------- native document batches


def parse_document_line(raw: bytes, line: int) -> tuple[str, str, dict[str, Any]] | str:
    """(id, text, metadata) from one JSONL line, or the reason it cannot be used."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(obj, dict):
        return f"expected a JSON object with 'text', got {type(obj).__name__}"
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        return "'text' must be a non-empty string"
    doc_id = obj.get("id", f"line-{line}")
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool) or str(doc_id) == "":
        return "'id' must be a non-empty string or an integer"
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        return "'metadata' must be a JSON object"
    try:
        check_metadata(metadata)
    except ApiError as exc:
        return exc.message
    return str(doc_id), text, metadata


def add_document(
    intake: Intake, options: NativeOptions, line: int, doc_id: str, text: str, metadata: dict[str, Any]
) -> None:
    """One document: one job, or map jobs plus a parked reduce, or a failure if too long."""
    if not intake.claim_id(line, doc_id):
        return
    try:
        parts = split_document(text, options.window.document_budget(options.prompt))
    except ValueError as exc:
        intake.fail_line(line, doc_id, "too_long", str(exc))
        return
    common: dict[str, Any] = {
        "model": options.model,
        "strategy": options.strategy,
        "routing": options.routing,
        "metadata": metadata,
        "custom_id": doc_id,
        "line_number": line,
        "deadline_at": options.deadline_at(),
    }
    if len(parts) == 1:
        request = user_request(fill(options.prompt, text), options.max_tokens)
        intake.writer.add(job_row(intake.batch, request=request, **common))
    elif options.on_too_long == "reject":
        intake.fail_line(
            line,
            doc_id,
            "too_long",
            f"document {doc_id!r} needs {len(parts)} parts to fit {options.window.model_id}'s "
            f"{options.window.context_window}-token context; on_too_long=reject",
        )
        return
    else:
        for number, chunk in enumerate(parts, 1):
            request = user_request(
                fill(options.prompt, part_text(chunk, number, len(parts))), options.max_tokens
            )
            intake.writer.add(job_row(intake.batch, request=request, stage="map", part=number, **common))
        # Its request is written from the parts' answers when they have all ended.
        intake.writer.add(job_row(intake.batch, request={}, stage="reduce", parked=True, **common))
    intake.accepted += 1


def add_jsonl_documents(intake: Intake, options: NativeOptions, lines: Iterable[bytes]) -> None:
    """Every line of a JSONL upload (blank lines are skipped but keep their numbers)."""
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        parsed = parse_document_line(raw, number)
        if isinstance(parsed, str):
            intake.fail_line(number, _id_if_any(raw, number), "invalid_line", parsed)
        else:
            add_document(intake, options, number, *parsed)


def _id_if_any(raw: bytes, line: int) -> str:
    """A bad line's own id when it has a usable one (not already taken), else `line-<n>`."""
    try:
        doc_id = json.loads(raw).get("id")
    except (ValueError, UnicodeDecodeError, AttributeError):
        doc_id = None
    return str(doc_id) if isinstance(doc_id, str | int) and str(doc_id) else f"line-{line}"


# ---------------------------------------------------------------- OpenAI batch input files


def add_openai_line(intake: Intake, catalog: Catalog, endpoint: str, line: int, raw: bytes) -> None:
    """One request line of an OpenAI batch input file."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        intake.fail_line(line, None, "invalid_line", f"not valid JSON: {exc}")
        return
    if not isinstance(obj, dict):
        intake.fail_line(line, None, "invalid_line", "expected a JSON object")
        return
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        intake.fail_line(line, None, "invalid_line", "'custom_id' must be a non-empty string")
        return
    if not intake.claim_id(line, custom_id):
        return
    if obj.get("method", "POST") != "POST" or obj.get("url") != endpoint:
        intake.fail_line(
            line,
            custom_id,
            "invalid_line",
            f"'method' must be POST and 'url' {endpoint!r} (the batch's endpoint)",
        )
        return
    try:
        job = parse_completion(obj.get("body"), catalog, where="body.")
    except ApiError as exc:
        intake.fail_line(line, custom_id, exc.code or "invalid_line", exc.message)
        return
    request = job.chat_request().model_dump(mode="json", exclude_none=True)
    intake.writer.add(
        job_row(
            intake.batch,
            request=request,
            custom_id=custom_id,
            line_number=line,
            model=job.model,
            strategy=job.strategy or ("manual" if job.model else "cost"),
            routing=job.routing_options(),
            metadata=job.metadata,
        )
    )
    intake.accepted += 1


def add_openai_lines(intake: Intake, catalog: Catalog, endpoint: str, lines: Iterable[bytes]) -> None:
    for number, raw in enumerate(lines, 1):
        if raw.strip():
            add_openai_line(intake, catalog, endpoint, number, raw)
