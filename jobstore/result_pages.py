"""Result downloads read in short sessions.

A download streams for as long as its client takes to read it. Were its rows read through one
session, a client that reads slowly or stalls would hold a pooled connection, in an open
transaction, all that time: a few dozen stalled downloads would exhaust the API's pool (every
other request then waits for a connection) and hold back vacuum. So the ids are read first,
in input order, and then each page of rows is read in a session of its own, closed before the
page is yielded: between pages, and while the client is not reading, nothing is held.

A row reflects its job as of its page's read; a download taken while the batch still runs
sees later rows as they are then, as a stream of results should.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobstore import batch_results, batches
from jobstore.db import session_factory
from jobstore.models import Job

K = TypeVar("K")
T = TypeVar("T")
PAGE_ROWS = 200  # a page of result rows: ~100 KB of JSON for short answers


def in_pages(keys: Sequence[K], read: Callable[[Session, Sequence[K]], list[T]], page: int) -> Iterator[T]:
    """`read(session, keys)` for each page of `keys`, each in a session closed before its
    items are yielded."""
    for start in range(0, len(keys), page):
        with session_factory()() as session:
            items = read(session, keys[start : start + page])
        yield from items


def document_rows(batch_id: str, *, status: str | None = None) -> Iterator[dict[str, Any]]:
    """A document batch's result rows (one per document, `batch_results.document_row`), in
    input order, `status`: only the documents in it; read a page at a time."""
    with session_factory()() as session:
        parts = batches.map_totals(session, batch_id)
        query = select(Job.id).where(Job.batch_id == batch_id, batches.FINAL_STAGE)
        if status is not None:
            query = query.where(Job.status == status)
        ids = list(session.scalars(query.order_by(Job.line_number, Job.id)))

    def read(session: Session, page: Sequence[str]) -> list[dict[str, Any]]:
        jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(list(page))))}
        return [
            batch_results.document_row(jobs[job_id], parts.get(jobs[job_id].custom_id or ""))
            for job_id in page
            if job_id in jobs
        ]

    yield from in_pages(ids, read, PAGE_ROWS)
