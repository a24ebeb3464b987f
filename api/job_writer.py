"""Group commit for POST /v1/jobs: the jobs submitted while one write is under way are stored
together by the next, in one transaction with one INSERT, and each request is answered only
after the transaction holding its row has committed.

Per request, a session, a pooled connection's checkout, a thread hop, an INSERT round trip
and a COMMIT cost the API and Postgres more CPU than the rest of a submission; a group pays
them once. Nothing waits on purpose: a lone request is written at once, and a group forms
only from requests that arrived while the previous write was running (the writes of one
event loop run one at a time, on the thread pool).

Each job is checked as before (`api.job_intake.check_job`: the budget read once per key per
group), and a job that fails its check is answered with its own error while the rest are
stored. Should the INSERT itself fail for a reason other than the database being away, the
group's jobs are written again one by one, so one row Postgres refuses fails only its own
request. After the commit the new ids go to the dispatch buffer, as a single request's would.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from weakref import WeakKeyDictionary

from starlette.concurrency import run_in_threadpool

from api.dispatch_buffer import dispatch_buffer
from api.errors import DATABASE_AWAY
from api.job_intake import check_job, owner_budget
from core.types import ChatRequest
from jobstore.db import transaction
from jobstore.jobs import insert_jobs
from jobstore.models import ApiKey, Job
from routing.catalog import get_catalog

log = logging.getLogger(__name__)

MAX_GROUP = 500  # rows per transaction: a burst larger than this is written in several


@dataclass
class _Pending:
    owner: ApiKey
    job: Job
    request: ChatRequest
    answer: asyncio.Future[Job]


class JobWriter:
    """The group writer of one event loop (`job_writer()`)."""

    def __init__(self) -> None:
        self._pending: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def store(self, owner: ApiKey, job: Job, request: ChatRequest) -> Job:
        """Check and store a drafted job; returns it once its row is committed, or raises its
        ApiError (nothing can serve it), or the database's error."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Job] = loop.create_future()
        self._pending.append(_Pending(owner, job, request, answer))
        if self._task is None:
            self._task = loop.create_task(self._write_all())
        return await answer

    async def _write_all(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                try:
                    outcomes = await run_in_threadpool(write_group, group)
                except asyncio.CancelledError:  # the loop is closing: nobody is left to answer
                    for pending in group + self._pending:
                        pending.answer.cancel()
                    self._pending = []
                    raise
                except Exception as exc:  # the database is away: every request says so
                    for pending in group:
                        if not pending.answer.done():
                            pending.answer.set_exception(exc)
                    continue
                for pending, outcome in zip(group, outcomes, strict=True):
                    if pending.answer.done():  # the client went away; its job is stored all the same
                        continue
                    if isinstance(outcome, BaseException):
                        pending.answer.set_exception(outcome)
                    else:
                        pending.answer.set_result(outcome)
        finally:
            self._task = None


def write_group(group: list[_Pending]) -> list[Job | Exception]:
    """Check each job, store those that pass in one transaction, then hand their ids to the
    dispatcher. Returns, per job, the stored job or its error."""
    try:
        outcomes = _write(group)
    except DATABASE_AWAY:
        raise
    except Exception:
        if len(group) == 1:
            raise
        log.warning("could not store a group of %d jobs; storing them one by one", len(group), exc_info=True)
        outcomes = []
        for pending in group:
            try:
                outcomes.extend(_write([pending]))
            except Exception as exc:  # its own answer; those already committed keep theirs
                outcomes.append(exc)
    stored = [o.id for o in outcomes if isinstance(o, Job)]
    if stored:
        dispatch_buffer().add_many(stored)
    return outcomes


def _write(group: list[_Pending]) -> list[Job | Exception]:
    catalog = get_catalog()
    outcomes: list[Job | Exception] = []
    with transaction() as session:
        budgets: dict[str, Decimal | None] = {}
        for pending in group:
            owner = pending.owner
            if owner.id not in budgets:
                budgets[owner.id] = owner_budget(session, owner)
            try:
                check_job(pending.job, pending.request, catalog, budgets[owner.id])
            except Exception as exc:  # this job's answer (a 422 saying why); the others go on
                outcomes.append(exc)
                continue
            outcomes.append(pending.job)
        insert_jobs(session, [o for o in outcomes if isinstance(o, Job)])
    return outcomes


_writers: WeakKeyDictionary[asyncio.AbstractEventLoop, JobWriter] = WeakKeyDictionary()


def job_writer() -> JobWriter:
    """This event loop's writer (uvicorn runs one loop; a test client may run several)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = JobWriter()
    return writer
