"""Batch progress on the worker side, as plain functions: releasing reduce jobs, finalizing,
and the webhook (the tasks that run them are in `workers/tasks.py`).

No chord: when a batch's job ends, the task that ended it asks for a batch check (at most
one a second per batch, debounced in Redis), and dispatcher workers ask for one for every
open batch every 30 s (`workers/periodic.py`), catching jobs that ended without a hook and a
finalize whose worker died. A check counts the batch's jobs in Postgres; when none is open
it takes the finalize (a conditional UPDATE, so only one worker does it), writes the output
and error files and the batch's final status in one transaction, then sends the webhook if
the batch named one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from core.clock import aware
from jobstore import batch_results, batches
from jobstore.batch_models import ENDED_BATCH_STATUSES, Batch, BatchKind
from jobstore.batches import EMBEDDINGS_ENDPOINT
from jobstore.db import transaction
from jobstore.embedding_results import is_embed_mode, write_embedding_files
from jobstore.models import JobStatus
from routing.documents import reduce_text, user_request
from workers import webhooks
from workers.messages import send_batch_check, send_batch_webhook, send_dispatch, send_expiry_check
from workers.next_step import NextStep, Nothing
from workers.queues import Priority

log = logging.getLogger(__name__)
EXPIRY_LOOKAHEAD_S = 60.0  # longer than the periodic check's interval


# ---------------------------------------------------------------- hooks the job tasks call


def after_step(step: NextStep) -> None:
    """Called once a task has sent its step: if the step ended a batch's job (a result, a
    failure, no route), check that batch. (Jobs ended some other way, such as a cancel, are
    caught by the periodic check of open batches.)"""
    if isinstance(step, Nothing) and step.ended_batch is not None:
        send_batch_check(step.ended_batch)


def check_open_batches(limit: int = 200) -> int:
    """The sweeper's share: a check for every batch not yet ended."""
    with transaction() as session:
        ids = session.scalars(
            select(Batch.id)
            .where(Batch.status.not_in(ENDED_BATCH_STATUSES))
            .order_by(Batch.created_at)
            .limit(limit)
        ).all()
    for batch_id in ids:
        send_batch_check(batch_id, countdown=0.1)
    return len(ids)


# ---------------------------------------------------------------- the check and the finalize


def reduce_request(batch: Batch, answers: list[str]) -> dict[str, Any]:
    return user_request(
        reduce_text(batch.prompt or "{document}", answers), (batch.options or {}).get("max_tokens")
    )


def check_batch(batch_id: str) -> str:
    """Expire a batch past its expires_at; release ready reduces; finalize when no job is open.
    Safe to run any number of times."""
    now = datetime.now(UTC)
    with transaction() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or batch.status in ENDED_BATCH_STATUSES:
            return "ended"
        expired = batches.expire_batch(session, batch, now)
        if expired:
            log.info("batch %s expired: %d open requests cancelled", batch_id, expired)
        _check_at_expiry(batch, now)
        released = batches.release_ready_reduces(session, batch, reduce_request)
    send_dispatch([r.job_id for r in released if r.dispatch], priority=Priority.BATCH)
    now = datetime.now(UTC)
    with transaction() as session:
        if batches.count_batch(session, batch_id).open_jobs > 0:
            return "open"
        if not batches.claim_finalize(session, batch_id, now):
            return "finalize taken"
    finalize(batch_id)
    return "finalized"


def _check_at_expiry(batch: Batch, now: datetime) -> None:
    """A batch that expires before the next periodic check gets a check at its expires_at."""
    if batch.expires_at is None:
        return
    left = (aware(batch.expires_at) - now).total_seconds()
    if 0 < left <= EXPIRY_LOOKAHEAD_S:
        send_expiry_check(batch.id, left + 0.5)


def finalize(batch_id: str) -> None:
    """Build the output and error files and close the batch, all in one transaction."""
    now = datetime.now(UTC)
    with transaction() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        counts = batches.count_batch(session, batch_id, per_line=batch.endpoint == EMBEDDINGS_ENDPOINT)
        output, errors = _write_files(session, batch)
        batches.finish_batch(session, batch, counts, now, output, errors)
        webhook = batch.webhook_url
    log.info("batch %s finalized: %s", batch_id, counts.by_status)
    if webhook:
        send_batch_webhook(batch_id)


def _write_files(session: Any, batch: Batch) -> tuple[str | None, str | None]:
    if batch.endpoint == EMBEDDINGS_ENDPOINT or is_embed_mode(batch):  # vectors: embedding_results.py
        return write_embedding_files(session, batch)
    out = batches.FileWriter(session, batch.owner_id, f"{batch.id}_output.jsonl", "batch_output")
    err = batches.FileWriter(session, batch.owner_id, f"{batch.id}_errors.jsonl", "batch_output")
    parts = batches.map_totals(session, batch.id) if batch.kind == BatchKind.NATIVE else {}
    for job in batches.final_jobs(session, batch.id):
        ok = job.status == JobStatus.SUCCEEDED
        if batch.kind == BatchKind.OPENAI:
            (out if ok else err).write_line(
                batch_results.openai_output_line(job) if ok else batch_results.openai_error_line(job)
            )
        else:
            row = batch_results.document_row(job, parts.get(job.custom_id or ""))
            out.write_line(row)
            if not ok:
                err.write_line(row)
    out_file, err_file = out.close(), err.close()
    if batch.kind == BatchKind.OPENAI:  # OpenAI names a file only when it has lines
        return (out_file.id if out_file.line_count else None), (err_file.id if err_file.line_count else None)
    return out_file.id, (err_file.id if err_file.line_count else None)


# ---------------------------------------------------------------- the webhook


def webhook_payload(batch: Batch) -> dict[str, Any]:
    counts = batches.BatchCounts.from_json(batch.final_counts) if batch.final_counts else None
    by_status = counts.by_status if counts else {}
    return {
        "type": f"batch.{batch.status}",
        "data": {
            "id": batch.id,
            "object": "batch" if batch.kind == BatchKind.OPENAI else "document_batch",
            "status": batch.status,
            "request_counts": {
                "total": batch.total,
                "completed": by_status.get(JobStatus.SUCCEEDED, 0),
                "failed": by_status.get(JobStatus.FAILED, 0) + by_status.get(JobStatus.CANCELLED, 0),
            },
            "cost_usd": str(counts.cost_usd) if counts else "0",
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "metadata": batch.batch_metadata,
        },
    }


def deliver_webhook(batch_id: str) -> webhooks.Delivery:
    """POST the batch's final state to its webhook_url, signed with its key's secret, never to
    an internal address (`workers/webhooks.py`)."""
    with transaction() as session:
        batch = session.get(Batch, batch_id)
        if batch is None or not batch.webhook_url or batch.webhook_delivered_at is not None:
            return webhooks.Delivery(True, retry=False, detail="nothing to deliver")
        if batch.status not in ENDED_BATCH_STATUSES:
            return webhooks.Delivery(True, retry=False, detail="not ended")
        url, payload, owner_id = batch.webhook_url, webhook_payload(batch), batch.owner_id
        batch.webhook_attempts += 1
    event = str(payload["type"])
    result = webhooks.deliver(url, event, payload, key_id=owner_id, headers={"X-Llmqueue-Batch": batch_id})
    if result.delivered:
        with transaction() as session:
            found = session.get(Batch, batch_id)
            if found is not None:
                found.webhook_delivered_at = datetime.now(UTC)
    return result
