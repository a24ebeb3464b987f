"""The FastAPI application: routes per resource, one error shape, OpenAPI docs at /docs.

The API validates, writes and enqueues; it never calls a provider.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api.errors import install_error_handlers
from routing.catalog import get_catalog

# Route modules, each exposing `router`. Resources added by later work register here.
ROUTE_MODULES = (
    "api.routes.health",
    "api.routes.jobs",
    "api.routes.models",
    "api.routes.providers",
    "api.routes.provider_test",
    "api.routes.stats",
    "api.routes.route_preview",
    "api.routes.files",
    "api.routes.batches",
    "api.routes.document_batches",
    "api.routes.chat_completions",
)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Pay the cold start before the first request: database connections, and the tokenizer
    tables that validation counts input tokens with (about half a second to load)."""
    from jobstore.db import warm_pool
    from routing.tokens import count_text

    await run_in_threadpool(warm_pool)
    await run_in_threadpool(count_text, "warm up the tokenizer")
    yield


def create_app() -> FastAPI:
    get_catalog()  # a malformed catalog fails the start, not the first request
    app = FastAPI(
        lifespan=lifespan,
        title="llmqueue",
        version="0.1.0",
        description="Asynchronous, durable LLM generation jobs routed across providers. "
        "Authenticate with `Authorization: Bearer <key>` (`llmqueue keys create`).",
    )
    install_error_handlers(app)
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        app.include_router(module.router)
    return app
