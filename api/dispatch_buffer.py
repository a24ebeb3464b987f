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
from functools import cache

from workers.messages import DISPATCH_WINDOW, send_dispatch

log = logging.getLogger(__name__)

MAX_WAIT_S = 0.005  # how long the first id of a message may wait for company


class DispatchBuffer:
    def __init__(self, max_ids: int = DISPATCH_WINDOW, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_ids = max_ids
        self.max_wait_s = max_wait_s
        self._ids: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="llmqueue-dispatch-buffer", daemon=True)
        self._thread.start()

    def add(self, job_id: str) -> None:
        with self._cond:
            self._ids.append(job_id)
            self._cond.notify()

    def _take(self) -> list[str]:
        with self._cond:
            while not self._ids:
                self._cond.wait()
            if len(self._ids) < self.max_ids:
                self._cond.wait_for(lambda: len(self._ids) >= self.max_ids, timeout=self.max_wait_s)
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
