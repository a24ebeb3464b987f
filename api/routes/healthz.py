"""/healthz: is this API process up, and can it reach the job store.

An answer must not wait behind the work it reports on: a burst of requests (a thousand
streams opening) fills the request thread pool, the process's database pool and the GIL, and
a health check queued behind them would make a busy, healthy process look dead. So the check
runs on a thread of its own, with a database connection of its own
(`jobstore.db.probe_engine`), and a request is answered from the latest check while it is
fresh (FRESH_S), starting the next one in the background once it is older than REFRESH_S. A
request waits for a check only when the last one is older than FRESH_S (the first request,
or after a quiet spell), so a database that goes away shows within about a second.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from core.settings import get_settings
from jobstore.db import probe_engine

router = APIRouter(tags=["health"])
_checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmqueue-healthz")
REFRESH_S = 0.5  # a check older than this is renewed in the background
FRESH_S = 2.0  # a check older than this is not answered; the request waits for a new one


def _check() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with probe_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, never raise: this is the health check
        checks["database"] = f"error: {type(exc).__name__}"
    return checks


class _Checks:
    """The latest check, when it began, and the check in flight (one at a time)."""

    def __init__(self) -> None:
        self.latest: dict[str, str] | None = None
        self.began = 0.0  # monotonic start of the latest check
        self.running: asyncio.Future[dict[str, str]] | None = None

    def _start(self) -> asyncio.Future[dict[str, str]]:
        if self.running is None:
            began = time.monotonic()
            running = asyncio.get_running_loop().run_in_executor(_checker, _check)

            def keep(done: asyncio.Future[dict[str, str]]) -> None:
                self.running = None
                if not done.cancelled() and done.exception() is None:
                    self.latest, self.began = done.result(), began

            running.add_done_callback(keep)
            self.running = running
        return self.running

    async def current(self) -> dict[str, str]:
        age = time.monotonic() - self.began
        if self.latest is not None and age < FRESH_S:
            if age >= REFRESH_S:
                self._start()
            return self.latest
        return await asyncio.shield(self._start())


_checks = _Checks()


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, str] = Field(description="Each dependency: ok, or error: <exception class>.")


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "A dependency is unreachable"}},
    description="200 when this process can reach the job store, else 503 with `Retry-After`. "
    f"Answered from a check at most {FRESH_S:.0f} s old, so a busy process answers at once.",
)
async def healthz() -> JSONResponse:
    checks = await _checks.current()
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": str(get_settings().db_retry_after_s)},
    )
