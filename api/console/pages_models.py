"""The Models page: the catalog with prices, limits, capabilities, quality and tags, each
deployment's live health beside it, and the same filters as `GET /v1/models` plus a search.

The table refreshes itself every few seconds (an htmx fragment), so a breaker opening shows
up without a reload. Health comes from `GET /v1/providers` as the signed-in key sees it: an
admin key gets each deployment's breaker, latency and error rate; where the API gives a key
only each model's availability, that is what is shown.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from api.console.base import ConsoleRoute, Viewer, ViewerDep, render
from routing.catalog import CAPABILITIES, get_catalog

router = APIRouter(route_class=ConsoleRoute)
REFRESH_S = 5


def _matches(model: dict[str, Any], q: str) -> bool:
    words = q.lower().split()
    haystack = " ".join([model["id"], model["provider"], *model["tags"], *model["capabilities"]]).lower()
    return all(word in haystack for word in words)


def _health_index(providers: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(health by deployment name, availability by model), from either view of /v1/providers."""
    by_deployment: dict[str, dict[str, Any]] = {}
    by_model: dict[str, dict[str, Any]] = {}
    for provider in providers.get("data", []):
        for dep in provider.get("deployments", []):
            by_deployment[dep["deployment"]] = dep
        for model in provider.get("models", []):
            by_model[model["model"]] = model
    return by_deployment, by_model


async def _table_context(who: Viewer, request: Request) -> dict[str, Any]:
    filters = {k: request.query_params.get(k) or None for k in ("capability", "provider", "tag")}
    q = (request.query_params.get("q") or "").strip()
    models, providers = await asyncio.gather(
        who.api.get("/v1/models", {k: v for k, v in filters.items() if v}), who.api.get("/v1/providers")
    )
    rows = [m for m in models["data"] if not q or _matches(m, q)]
    health, availability = _health_index(providers)
    return {
        "models": rows,
        "total": len(get_catalog().models),
        "health": health,
        "availability": availability,
        "checked_at": providers.get("checked_at"),
        "filters": filters,
        "q": q,
        "query": request.url.query,
        "refresh_s": REFRESH_S,
    }


@router.get("/models")
async def models_page(request: Request, who: ViewerDep) -> Response:
    catalog = get_catalog()
    context = await _table_context(who, request)
    tags = sorted({t for m in catalog.models.values() for t in m.tags})
    return render(
        request,
        who,
        "models.html",
        capabilities=CAPABILITIES,
        providers=catalog.providers(),
        tags=tags,
        **context,
    )


@router.get("/models/table")
async def models_table(request: Request, who: ViewerDep) -> Response:
    return render(request, who, "_models_table.html", **await _table_context(who, request))
