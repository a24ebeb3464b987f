"""/healthz: is this API process up, and can it reach the job store and the broker.

The check runs on a thread of its own, not on the request thread pool: a burst of requests
(a thousand streams opening) queues there, and a health check waiting behind them would make
a busy, healthy process look dead. It still takes its connection from the process's pool, so
a pool that stays exhausted shows here.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from core.settings import get_settings
from jobstore.db import get_engine

router = APIRouter(tags=["health"])
_checker = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmqueue-healthz")


def _check() -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, never raise: this is the health check
        checks["database"] = f"error: {type(exc).__name__}"
    return checks


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, str] = Field(description="Each dependency: ok, or error: <exception class>.")


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "A dependency is unreachable"}},
)
async def healthz() -> JSONResponse:
    checks = await asyncio.get_running_loop().run_in_executor(_checker, _check)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": str(get_settings().db_retry_after_s)},
    )
