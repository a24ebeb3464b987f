"""The FastAPI application: routes per resource, one error shape, OpenAPI docs at /docs.

The API validates, writes and enqueues; it never calls a provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.console.router import router as console_router
from api.errors import install_error_handlers
from api.guard import RequestGuard
from api.idempotency import install_idempotency_handlers
from api.openapi import install_openapi
from api.routes import (
    batches,
    chat_completions,
    document_batches,
    embed_results,
    embeddings,
    files,
    healthz,
    jobs,
    keys,
    metrics,
    models,
    provider_test,
    providers,
    route_preview,
    spend,
    stats,
)
from core.heap import freeze_startup_heap
from jobstore.db import get_engine, store_any_text
from routing.catalog import get_catalog

# Every resource's routes, in the order /docs lists them.
ROUTERS = (
    healthz.router,
    metrics.router,
    console_router,  # /console: the web console (not in /docs)
    jobs.router,
    models.router,
    providers.router,
    provider_test.router,
    stats.router,
    spend.router,
    route_preview.router,
    files.router,
    batches.router,
    document_batches.router,
    embed_results.router,
    chat_completions.router,
    embeddings.router,
    keys.router,
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Pay the cold start before the first request: database connections, and the tokenizer
    tables that validation counts input tokens with (about half a second to load)."""
    from jobstore.db import warm_pool
    from routing.tokens import count_text

    await run_in_threadpool(warm_pool)
    await run_in_threadpool(count_text, "warm up the tokenizer")
    freeze_startup_heap()
    yield


def create_app() -> FastAPI:
    get_catalog()  # a malformed catalog fails the start, not the first request
    store_any_text(get_engine())  # text with NUL or unpaired surrogates is stored, not a 500
    app = FastAPI(
        lifespan=lifespan,
        title="llmqueue",
        version="0.1.0",
        description="Asynchronous, durable LLM generation jobs routed across providers.\n\n"
        "Every route under `/v1` takes an API key as `Authorization: Bearer <key>` (create one with "
        "`llmqueue keys create`; in /docs, **Authorize** sets it for every call). Errors are OpenAI's "
        'shape, `{"error": {"message", "type", "param", "code"}}`. The OpenAI-compatible routes '
        "(`/v1/chat/completions`, `/v1/files`, `/v1/batches`, `/v1/models`) work with the official "
        "`openai` SDK given `base_url=<this server>/v1`.",
    )
    install_error_handlers(app)
    install_idempotency_handlers(app)
    install_openapi(app)
    app.add_middleware(RequestGuard)  # every request answered; bodies limited while read
    for router in ROUTERS:
        app.include_router(router)
    return app
