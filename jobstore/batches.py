"""Batch operations on the job store: bulk job inserts, counts, cancel, map-reduce release,
finalize, and file content kept in parts.

Everything about a batch's progress is counted from its jobs with one GROUP BY, never kept
in a counter. A document too long for its model becomes `map` jobs (one per part) and one
`reduce` job inserted *parked* (queued, `not_before` = PARKED_UNTIL, so neither the sweeper
nor anyone else sends it); when its map jobs have all ended, `release_ready_reduces` fills
in its request from their answers and unparks it. Durable, with no Celery chord: a crash
at any point leaves rows from which the next check carries on.

A batch's other jobs are stored held: for the feeder (`HELD_UNTIL`), or, when the batch may
use provider batches (`economy_eligible`), for economy mode's planner first
(`ECONOMY_HELD_UNTIL`, see workers/economy_feeder.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import case, exists, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from core.clock import aware, utcnow
from jobstore import ledger
from jobstore.batch_models import (
    FILE_PART_BYTES,
    OPEN_BATCH_STATUSES,
    Batch,
    BatchKind,
    BatchStatus,
    FilePart,
    StoredFile,
)
from jobstore.batch_results import EXPIRED_CODE
from jobstore.models import OPEN_JOB_STATUSES, Attempt, AttemptStatus, Job, JobStatus, new_id

INSERT_CHUNK = 1000
PARKED_UNTIL = datetime(9999, 1, 1, tzinfo=UTC)  # a reduce waiting for its parts
# A batch's job waiting for the feeder (workers/feeder.py) to release it to the dispatcher.
HELD_UNTIL = datetime(9000, 1, 1, tzinfo=UTC)
# A job of an economy-mode batch waiting for routing to decide provider batch or online
# (workers/economy_feeder.py): the feeder leaves it alone until then.
ECONOMY_HELD_UNTIL = datetime(9100, 1, 1, tzinfo=UTC)


class EconomyMode(StrEnum):
    """Whether a batch's jobs may go through a provider's batch API (`options["delivery"]`)."""

    # An OpenAI-style batch (its completion window is its deadline), or a document batch given
    # a deadline: by provider batch where that saves enough to be worth the wait.
    AUTO = "auto"
    ECONOMY = "economy"  # by provider batch wherever it saves anything, within the deadline if any
    ONLINE = "online"  # every job online


def economy_mode(batch: Batch) -> EconomyMode:
    return EconomyMode((batch.options or {}).get("delivery") or EconomyMode.AUTO)


def economy_eligible(batch: Batch) -> bool:
    """Whether routing is asked, for this batch's jobs, provider batch or online."""
    options = batch.options or {}
    if options.get("mode") == "embed" or batch.endpoint == "/v1/embeddings":
        return False  # embedding calls go online: provider batches here are chat completions
    mode = economy_mode(batch)
    if mode is EconomyMode.AUTO:
        return batch.kind == BatchKind.OPENAI or bool(options.get("deadline_s"))
    return mode is EconomyMode.ECONOMY


FINAL_STAGE = (Job.stage.is_(None)) | (Job.stage == "reduce")  # the job that answers a document


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def job_row(
    batch: Batch,
    *,
    request: dict[str, Any],
    custom_id: str | None,
    line_number: int,
    model: str | None,
    strategy: str,
    routing: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    stage: str | None = None,
    part: int | None = None,
    deadline_at: datetime | None = None,
    error: tuple[str, str] | None = None,
    parked: bool = False,
) -> dict[str, Any]:
    """One jobs row for a bulk insert. With `error` the job is born failed (a bad line). A job
    to run is held: for the feeder, or for economy planning when the batch may use provider batches."""
    now = utcnow()
    held = ECONOMY_HELD_UNTIL if economy_eligible(batch) else HELD_UNTIL
    row: dict[str, Any] = {
        "id": new_id("job"),
        "owner_id": batch.owner_id,
        "request_hash": request_hash(request),
        "status": JobStatus.FAILED if error else JobStatus.QUEUED,
        "request": request,
        "model_requested": model,
        "strategy": strategy,
        "routing": routing or {},
        "job_metadata": metadata or {},
        "stream": False,
        "deadline_at": deadline_at,
        "not_before": PARKED_UNTIL if parked else (None if error else held),
        "batch_id": batch.id,
        "custom_id": custom_id,
        "line_number": line_number,
        "stage": stage,
        "part": part,
        "created_at": now,
        "updated_at": now,
        "error_type": error[0] if error else None,
        "error_message": error[1] if error else None,
        "finished_at": now if error else None,
    }
    return row


@dataclass
class BulkJobWriter:
    """Inserts job rows in chunks and remembers which ids to dispatch after the commit."""

    session: Session
    chunk: int = INSERT_CHUNK
    to_dispatch: list[str] = field(default_factory=list)
    inserted: int = 0
    _pending: list[dict[str, Any]] = field(default_factory=list)

    def add(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if row["status"] == JobStatus.QUEUED and row["not_before"] is None:
            self.to_dispatch.append(row["id"])  # (a batch's jobs are held for the feeder instead)
        if len(self._pending) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.session.execute(insert(Job), self._pending)
            self.inserted += len(self._pending)
            self._pending = []


@dataclass(frozen=True)
class BatchCounts:
    """A batch's documents (or requests) by status, and the usage of every job in it."""

    by_status: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    open_jobs: int  # every stage: a batch finalizes only when this is 0

    def of(self, *statuses: str) -> int:
        return sum(self.by_status.get(s, 0) for s in statuses)

    @property
    def ended(self) -> int:
        return self.of(JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

    def as_json(self) -> dict[str, Any]:
        return {
            "by_status": self.by_status,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": str(self.cost_usd),
            "open_jobs": self.open_jobs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchCounts:
        return cls(
            dict(data["by_status"]),
            int(data["input_tokens"]),
            int(data["output_tokens"]),
            Decimal(data["cost_usd"]),
            int(data["open_jobs"]),
        )


# An OpenAI batch of /v1/embeddings lines packs many lines into one job (one provider call):
# its job notes how many (`metadata.lines`), and its counts are in lines, as OpenAI's are.
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
_LINES = func.coalesce(Job.job_metadata["lines"].as_integer(), 1)


def count_batch(session: Session, batch_id: str, *, per_line: bool = False) -> BatchCounts:
    """One GROUP BY over the batch's jobs: final jobs by status (or, `per_line`, the request
    lines they carry), usage over all of them."""
    is_map = case((Job.stage == "map", 1), else_=0).label("is_map")
    rows = session.execute(
        select(
            Job.status,
            is_map,
            func.sum(_LINES) if per_line else func.count(),
            func.coalesce(func.sum(Job.cost_usd), 0),
            func.coalesce(func.sum(Job.input_tokens), 0),
            func.coalesce(func.sum(Job.output_tokens), 0),
        )
        .where(Job.batch_id == batch_id)
        .group_by(Job.status, is_map)
    ).all()
    by_status: dict[str, int] = {}
    tokens_in = tokens_out = open_jobs = 0
    cost = Decimal(0)
    for status, mapped, n, job_cost, n_in, n_out in rows:
        if not mapped:
            by_status[status] = by_status.get(status, 0) + n
        if status in OPEN_JOB_STATUSES:
            open_jobs += n
        cost += Decimal(job_cost)
        tokens_in += int(n_in)
        tokens_out += int(n_out)
    return BatchCounts(by_status, tokens_in, tokens_out, cost, open_jobs)


def batch_counts(session: Session, batch: Batch) -> BatchCounts:
    """Frozen counts for an ended batch, live counts otherwise."""
    if batch.final_counts is not None:
        return BatchCounts.from_json(batch.final_counts)
    return count_batch(session, batch.id, per_line=batch.endpoint == EMBEDDINGS_ENDPOINT)


def eta_seconds(batch: Batch, counts: BatchCounts, now: datetime) -> float | None:
    """Remaining documents at the rate documents have ended so far; None before any has."""
    if batch.status not in OPEN_BATCH_STATUSES or batch.in_progress_at is None:
        return None if batch.status in OPEN_BATCH_STATUSES else 0.0
    elapsed = (now - aware(batch.in_progress_at)).total_seconds()
    done = counts.ended
    if done == 0 or elapsed <= 0:
        return None
    return round(max(0, batch.total - done) / (done / elapsed), 1)


def cancel_batch(session: Session, batch: Batch, now: datetime) -> bool:
    """Jobs not yet claimed by a worker are cancelled (never sent); running calls finish.

    Only job rows are locked here: a worker claiming an attempt locks the attempt, then its
    job, so touching attempts in the same transaction could deadlock with it. The cancelled
    jobs' pending attempts are closed afterwards by `close_cancelled_attempts` (until then
    they are harmless: a worker checks the job's status before any call)."""
    changed = session.execute(
        update(Batch)
        .where(Batch.id == batch.id, Batch.status.in_((BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS)))
        .values(status=BatchStatus.CANCELLING, cancelling_at=now)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.execute(
        update(Job)
        .where(Job.batch_id == batch.id, Job.status.in_((JobStatus.QUEUED, JobStatus.DISPATCHED)))
        .values(status=JobStatus.CANCELLED, finished_at=now)
    )
    return True


# OpenAI's message for a request whose batch's window ended before it ran (code EXPIRED_CODE).
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def expire_batch(session: Session, batch: Batch, now: datetime) -> int:
    """At `expires_at`, the batch's jobs not yet claimed by a worker are cancelled as
    `batch_expired`, and the batch is marked expired (it ends `expired` once its calls in
    flight finish; a batch whose every job had already run when it expired ends `completed`).
    Run again by every later check, so a job that comes back to the queue (a retry) is
    cancelled too. Returns how many jobs it cancelled. Only job rows are locked, as in
    `cancel_batch`."""
    if batch.expires_at is None or aware(batch.expires_at) > now or batch.status != BatchStatus.IN_PROGRESS:
        return 0
    cancelled = session.execute(
        update(Job)
        .where(Job.batch_id == batch.id, Job.status.in_((JobStatus.QUEUED, JobStatus.DISPATCHED)))
        .values(
            status=JobStatus.CANCELLED,
            finished_at=now,
            not_before=None,
            error_type=EXPIRED_CODE,
            error_message=EXPIRED_MESSAGE,
        )
    ).rowcount  # type: ignore[attr-defined]
    if cancelled and batch.expired_at is None:
        session.execute(
            update(Batch).where(Batch.id == batch.id, Batch.expired_at.is_(None)).values(expired_at=now)
        )
        batch.expired_at = now
    return int(cancelled)


def close_cancelled_attempts(session: Session, batch_id: str, now: datetime) -> None:
    """Pending attempts of a cancelled batch's cancelled jobs -> cancelled (run in its own
    transaction), and the budget they reserved at dispatch given back (an attempt a worker
    claimed first is running instead, and its claim gives its reservation back)."""
    cancelled = select(Job.id).where(Job.batch_id == batch_id, Job.status == JobStatus.CANCELLED)
    closed = session.execute(
        update(Attempt)
        .where(Attempt.job_id.in_(cancelled), Attempt.status == AttemptStatus.PENDING)
        .values(status=AttemptStatus.CANCELLED, finished_at=now)
        .returning(Attempt.reserved_usd)
    ).all()
    reserved = sum((Decimal(row.reserved_usd or 0) for row in closed), Decimal(0))
    owner_id = session.scalar(select(Batch.owner_id).where(Batch.id == batch_id)) if reserved else None
    if owner_id is not None:
        ledger.release(session, owner_id, batch_id, reserved)


@dataclass(frozen=True)
class ReleasedReduce:
    job_id: str
    dispatch: bool  # False: a part failed, so the reduce failed too


def release_ready_reduces(session: Session, batch: Batch, reduce_prompt: Any) -> list[ReleasedReduce]:
    """Unpark each reduce whose map jobs have all ended. `reduce_prompt(batch, answers)` builds
    its request from the parts' answers; a failed or cancelled part fails the document."""
    part = aliased(Job)
    open_part = exists().where(
        part.batch_id == batch.id,
        part.custom_id == Job.custom_id,
        part.stage == "map",
        part.status.in_(OPEN_JOB_STATUSES),
    )
    ready = session.scalars(
        select(Job)
        .where(
            Job.batch_id == batch.id,
            Job.stage == "reduce",
            Job.status == JobStatus.QUEUED,
            Job.not_before == PARKED_UNTIL,
            ~open_part,
        )
        .limit(500)
    ).all()
    released = []
    now = utcnow()
    for reduce_job in ready:
        parts = session.scalars(
            select(Job)
            .where(Job.batch_id == batch.id, Job.custom_id == reduce_job.custom_id, Job.stage == "map")
            .order_by(Job.part)
        ).all()
        broken = next((p for p in parts if p.status != JobStatus.SUCCEEDED), None)
        guard = (Job.id == reduce_job.id) & (Job.not_before == PARKED_UNTIL)
        if broken is not None:
            why = broken.error_message or broken.status
            session.execute(
                update(Job)
                .where(guard)
                .values(
                    status=JobStatus.FAILED,
                    not_before=None,
                    finished_at=now,
                    error_type="part_failed",
                    error_message=f"part {broken.part} of {len(parts)} {broken.status}: {why}",
                )
            )
            released.append(ReleasedReduce(reduce_job.id, dispatch=False))
            continue
        request = reduce_prompt(batch, [p.result_text or "" for p in parts])
        changed = session.execute(
            update(Job)
            .where(guard)
            .values(request=request, request_hash=request_hash(request), not_before=None, updated_at=now)
        )
        if changed.rowcount == 1:  # type: ignore[attr-defined]
            released.append(ReleasedReduce(reduce_job.id, dispatch=True))
    return released


def claim_finalize(session: Session, batch_id: str, now: datetime, stale_after_s: float = 120) -> bool:
    """Take the batch's finalize, once; or retake one that stalled (its worker died)."""
    stale = now - timedelta(seconds=stale_after_s)
    changed = session.execute(
        update(Batch)
        .where(
            Batch.id == batch_id,
            Batch.status.in_((BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING, BatchStatus.FINALIZING)),
            Batch.finalizing_at.is_(None) | (Batch.finalizing_at < stale),
        )
        # A cancelled batch stays `cancelling` until it is `cancelled`, as OpenAI's does.
        .values(
            status=case(
                (Batch.status == BatchStatus.CANCELLING, BatchStatus.CANCELLING), else_=BatchStatus.FINALIZING
            ),
            finalizing_at=now,
        )
    )
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


def finish_batch(
    session: Session,
    batch: Batch,
    counts: BatchCounts,
    now: datetime,
    output_file_id: str | None,
    error_file_id: str | None,
) -> None:
    cancelled = batch.cancelling_at is not None
    expired = not cancelled and batch.expired_at is not None  # its expired_at is when it expired
    values: dict[str, Any] = {
        "status": BatchStatus.CANCELLED
        if cancelled
        else (BatchStatus.EXPIRED if expired else BatchStatus.COMPLETED),
        "final_counts": counts.as_json(),
        "output_file_id": output_file_id,
        "error_file_id": error_file_id,
    }
    if not expired:
        values["cancelled_at" if cancelled else "completed_at"] = now
    session.execute(update(Batch).where(Batch.id == batch.id).values(**values))


def final_jobs(session: Session, batch_id: str, *, status: str | None = None) -> Iterator[Job]:
    """The job answering each document or request, in input order, a thousand rows at a time."""
    query = select(Job).where(Job.batch_id == batch_id, FINAL_STAGE)
    if status is not None:
        query = query.where(Job.status == status)
    query = query.order_by(Job.line_number, Job.id).execution_options(yield_per=1000)
    yield from session.scalars(query)


def map_totals(
    session: Session, batch_id: str, custom_id: str | None = None
) -> dict[str, tuple[int, int, Decimal, int]]:
    """Tokens, cost and count of split documents' map jobs, by document: the parts' full price."""
    query = (
        select(
            Job.custom_id,
            func.sum(Job.input_tokens),
            func.sum(Job.output_tokens),
            func.sum(Job.cost_usd),
            func.count(),
        )
        .where(Job.batch_id == batch_id, Job.stage == "map")
        .group_by(Job.custom_id)
    )
    if custom_id is not None:
        query = query.where(Job.custom_id == custom_id)
    return {
        str(c): (int(i or 0), int(o or 0), Decimal(k or 0), int(n))
        for c, i, o, k, n in session.execute(query)
    }


# ---------------------------------------------------------------- file content in parts


class FileWriter:
    """Writes a file's content into `file_parts` a part at a time; `close()` records its size."""

    def __init__(self, session: Session, owner_id: str, filename: str, purpose: str) -> None:
        self.session = session
        self.file = StoredFile(owner_id=owner_id, filename=filename, purpose=purpose, bytes=0, line_count=0)
        session.add(self.file)
        session.flush()
        self._buffer = bytearray()
        self._seq = 0

    @property
    def id(self) -> str:
        return self.file.id

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.file.bytes += len(data)
        self.file.line_count += data.count(b"\n")
        while len(self._buffer) >= FILE_PART_BYTES:
            self._flush(bytes(self._buffer[:FILE_PART_BYTES]))
            del self._buffer[:FILE_PART_BYTES]

    def write_line(self, obj: dict[str, Any]) -> None:
        self.write(json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n")

    def _flush(self, data: bytes) -> None:
        self.session.execute(insert(FilePart), [{"file_id": self.file.id, "seq": self._seq, "data": data}])
        self._seq += 1

    def close(self) -> StoredFile:
        if self._buffer:
            self._flush(bytes(self._buffer))
            self._buffer.clear()
        self.session.flush()
        return self.file


def file_parts(session: Session, file_id: str) -> Iterator[bytes]:
    """A file's content, one part (up to 1 MiB) at a time."""
    for seq in file_part_numbers(session, file_id):
        yield file_part(session, file_id, seq)


def file_part_numbers(session: Session, file_id: str) -> list[int]:
    return list(
        session.scalars(select(FilePart.seq).where(FilePart.file_id == file_id).order_by(FilePart.seq))
    )


def file_part(session: Session, file_id: str, seq: int) -> bytes:
    data = session.scalar(select(FilePart.data).where(FilePart.file_id == file_id, FilePart.seq == seq))
    return bytes(data or b"")


def file_lines(session: Session, file_id: str) -> Iterator[bytes]:
    """A file's lines (without their newline), reading one part at a time."""
    rest = b""
    for data in file_parts(session, file_id):
        rest += data
        *lines, rest = rest.split(b"\n")
        yield from lines
    if rest:
        yield rest


def owned(session: Session, model: type[Any], object_id: str, owner_id: str) -> Any:
    found = session.get(model, object_id)
    return found if found is not None and found.owner_id == owner_id else None


def batches_page(session: Session, owner_id: str, kind: str, after: str | None, limit: int) -> list[Batch]:
    """Newest first; `after` is the last id of the previous page. One more than asked, for has_more."""
    query = select(Batch).where(Batch.owner_id == owner_id, Batch.kind == kind)
    if after is not None:
        anchor = session.get(Batch, after)
        if anchor is not None:
            query = query.where(
                (Batch.created_at < anchor.created_at)
                | ((Batch.created_at == anchor.created_at) & (Batch.id < anchor.id))
            )
    return list(session.scalars(query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit + 1)))
