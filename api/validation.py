"""Checks a submission must pass before it is accepted: the model exists, max_tokens fits it,
the strategy is known, and at least one deployment can serve the request (capabilities,
context window, floors and ceilings). Routing is asked about the job row about to be stored,
through the builder the dispatcher uses (`RoutingRequest.for_job`), without health (a
deployment that is down now may be up at dispatch).

When nothing can serve the request for one reason, the 422 names it: `param` is the request
field at fault (for an image, the path to the first image part) and `code` the reason; a
missing capability is `unsupported_<capability>` and the message says which model lacks it.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal

from api.errors import ApiError
from core.types import ChatRequest
from routing.catalog import Catalog
from routing.router import route
from routing.types import (
    Exclusion,
    NoRoute,
    RoutableJob,
    RoutingDecision,
    RoutingRequest,
    UnknownModel,
    UnknownStrategy,
)
from workers.providers.base import unavailable_deployments

# For each filter that excluded every candidate: the request field to blame, and the code.
PARAM_FOR_FILTER = {
    "kind": "model",
    "capabilities": "messages",
    "max_output": "max_tokens",
    "context": "messages",
    "quality": "min_quality",
    "cost_ceiling": "max_cost_usd",
    "budget": "Authorization",
    "configured": "model",
}
CODE_FOR_FILTER = {
    "kind": "wrong_model_kind",  # an embedding model named for a chat job (POST /v1/embeddings embeds)
    "capabilities": "unsupported_capability",
    "max_output": "max_tokens_too_large",
    "context": "context_length_exceeded",
    "quality": "quality_below_floor",
    "cost_ceiling": "cost_ceiling_exceeded",
    "budget": "budget_exceeded",
    "configured": "provider_not_configured",
}
PARAM_FOR_CAPABILITY = {
    "tools": "tools",
    "json_mode": "response_format",
    "json_schema": "response_format",
    "vision": "messages",
    "streaming": "stream",
}


def check_routable(
    job: RoutableJob, catalog: Catalog, budget_remaining: Decimal | None, request: ChatRequest | None = None
) -> RoutingDecision:
    """The routing decision for a job about to be stored (without health), or an ApiError naming
    what is wrong and where. `request` is the job's request already parsed, when at hand."""
    request = request if request is not None else ChatRequest.model_validate(job.request)
    try:
        return route(
            RoutingRequest.for_job(
                job,
                request=request,
                budget_remaining_usd=budget_remaining,
                unavailable=unavailable_deployments(),
            ),
            catalog,
            now=time.time(),
            rng=random.Random(0),
        )
    except UnknownModel as exc:
        raise ApiError(422, str(exc), param="model", code="model_not_found") from None
    except UnknownStrategy as exc:
        raise ApiError(422, str(exc), param="strategy", code="unknown_strategy") from None
    except NoRoute as exc:
        raise no_route_error(request, bool(job.stream), catalog, exc) from None
    except ValueError as exc:  # e.g. manual strategy without a model
        raise ApiError(422, str(exc), param="strategy", code="invalid_routing") from None


def no_route_error(request: ChatRequest, stream: bool, catalog: Catalog, exc: NoRoute) -> ApiError:
    """A 422 for a request every candidate refused; specific when they refused for one reason."""
    details = [
        {"deployment": e.deployment, "model": e.model, "filter": e.filter, "reason": e.reason}
        for e in exc.exclusions
    ]
    filters = {e.filter for e in exc.exclusions}
    if len(filters) != 1:
        return ApiError(422, str(exc), code="no_route", details=details)
    (only,) = filters
    if only == "configured":
        return ApiError(
            422,
            not_configured_message(exc.exclusions),
            param="model",
            code="provider_not_configured",
            details=details,
        )
    if only == "capabilities":
        lacking = lacking_capabilities(request, stream, catalog, exc.exclusions)
        if lacking:
            capability = lacking[0]
            models = ", ".join(sorted({repr(e.model) for e in exc.exclusions}))
            message = f"model {models} does not support {capability}: {exc}"
            return ApiError(
                422,
                message,
                param=capability_param(request, capability),
                code=f"unsupported_{capability}",
                details=details,
            )
    return ApiError(
        422,
        str(exc),
        param=PARAM_FOR_FILTER.get(only),
        code=CODE_FOR_FILTER.get(only, "no_route"),
        details=details,
    )


def lacking_capabilities(
    request: ChatRequest, stream: bool, catalog: Catalog, exclusions: tuple[Exclusion, ...]
) -> list[str]:
    """The capabilities the request needs that some excluded model lacks, in a stable order."""
    needed = request.required_capabilities() | ({"streaming"} if stream else set())
    lacking: set[str] = set()
    for exclusion in exclusions:
        model = catalog.model(exclusion.model)
        if model is not None:
            lacking |= needed - set(model.capabilities)
    return sorted(lacking, key=list(PARAM_FOR_CAPABILITY).index)


def capability_param(request: ChatRequest, capability: str) -> str:
    """Where in the request a capability is asked for; for vision, the first image part."""
    if capability == "vision":
        for i, message in enumerate(request.messages):
            if isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if part.type == "image_url":
                        return f"messages.{i}.content.{j}"
    return PARAM_FOR_CAPABILITY.get(capability, "messages")


def not_configured_message(exclusions: tuple[Exclusion, ...]) -> str:
    """What to set so that something can serve the request, each with the deployments it opens."""
    opened: dict[str, list[str]] = {}
    for exclusion in exclusions:
        for need in exclusion.reason.removeprefix("not configured: ").split("; "):
            opened.setdefault(need, []).append(exclusion.deployment)
    needs = "; ".join(f"{need} (for {', '.join(deployments)})" for need, deployments in opened.items())
    return f"no deployment that could serve this request is configured here: {needs}"
