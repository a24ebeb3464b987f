"""Coalesces the API's dispatch messages: ids of jobs committed within a few milliseconds
of each other go to the dispatcher in one message instead of one message each.

Measured here, one message per job cost the API and the dispatcher more CPU than routing the
job. A job's row is committed before its id enters the buffer, so nothing accepted depends
on the buffer: if the process dies with ids still in it, the sweeper
(`workers/sweeper.py`) finds those queued jobs and sends them.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import cache

from workers.messages import DISPATCH_WINDOW, send_dispatch

log = logging.getLogger(__name__)

# How long the first id of a message may wait for company: not at all when the API is idle
# (a lone job goes at once), up to BUSY_WAIT_S when messages went out moments ago.
BUSY_WAIT_S = 0.05
BUSY_WITHIN_S = 0.1


class DispatchBuffer:
    def __init__(self, max_ids: int = DISPATCH_WINDOW, busy_wait_s: float = BUSY_WAIT_S) -> None:
        self.max_ids = max_ids
        self.busy_wait_s = busy_wait_s
        self._last_send = 0.0
        self._ids: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="llmqueue-dispatch-buffer", daemon=True)
        self._thread.start()

    def add(self, job_id: str) -> None:
        with self._cond:
            self._ids.append(job_id)
            self._cond.notify()

    def add_many(self, job_ids: list[str]) -> None:
        with self._cond:
            self._ids.extend(job_ids)
            self._cond.notify()

    def _take(self) -> list[str]:
        with self._cond:
            while not self._ids:
                self._cond.wait()
            busy = time.monotonic() - self._last_send < BUSY_WITHIN_S
            if busy and len(self._ids) < self.max_ids:
                self._cond.wait_for(lambda: len(self._ids) >= self.max_ids, timeout=self.busy_wait_s)
            self._last_send = time.monotonic()
            taken, self._ids = self._ids[: self.max_ids], self._ids[self.max_ids :]
            return taken

    def _run(self) -> None:
        while True:
            ids = self._take()
            try:
                send_dispatch(ids)
            except Exception:  # the broker is down: the sweeper sends these jobs later
                log.exception("could not enqueue %d jobs; the sweeper will resend them", len(ids))


@cache
def dispatch_buffer() -> DispatchBuffer:
    return DispatchBuffer()
