"""Checks a submission must pass before it is accepted: the model exists, max_tokens fits it,
the strategy is known, and at least one deployment can serve the request (capabilities,
context window, floors and ceilings). Routing is asked exactly as the dispatcher will ask
it, without health (a deployment that is down now may be up at dispatch).

When nothing can serve the request for one reason, the 422 names it: `param` is the request
field at fault (for an image, the path to the first image part) and `code` the reason; a
missing capability is `unsupported_<capability>` and the message says which model lacks it.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal

from api.errors import ApiError
from api.schemas.jobs import JobCreate
from routing.catalog import Catalog
from routing.filters import Exclusion
from routing.router import NoRoute, RoutingDecision, RoutingRequest, UnknownModel, UnknownStrategy, route

# For each filter that excluded every candidate: the request field to blame, and the code.
PARAM_FOR_FILTER = {
    "capabilities": "messages",
    "max_output": "max_tokens",
    "context": "messages",
    "quality": "min_quality",
    "cost_ceiling": "max_cost_usd",
    "budget": "Authorization",
}
CODE_FOR_FILTER = {
    "capabilities": "unsupported_capability",
    "max_output": "max_tokens_too_large",
    "context": "context_length_exceeded",
    "quality": "quality_below_floor",
    "cost_ceiling": "cost_ceiling_exceeded",
    "budget": "budget_exceeded",
}
PARAM_FOR_CAPABILITY = {
    "tools": "tools",
    "json_mode": "response_format",
    "json_schema": "response_format",
    "vision": "messages",
    "streaming": "stream",
}


def routing_request(
    create: JobCreate, budget_remaining: Decimal | None, input_tokens: int | None = None
) -> RoutingRequest:
    return RoutingRequest.from_stored(
        create.chat_request(),
        model=create.model,
        strategy=create.strategy,
        options=create.routing_options(),
        stream=create.stream,
        budget_remaining_usd=budget_remaining,
        input_tokens=input_tokens,
    )


def check_routable(
    create: JobCreate, catalog: Catalog, budget_remaining: Decimal | None, input_tokens: int | None = None
) -> RoutingDecision:
    """The routing preview for a submission, or an ApiError naming what is wrong and where."""
    try:
        return route(
            routing_request(create, budget_remaining, input_tokens),
            catalog,
            {},
            now=time.time(),
            rng=random.Random(0),
        )
    except UnknownModel as exc:
        raise ApiError(422, str(exc), param="model", code="model_not_found") from None
    except UnknownStrategy as exc:
        raise ApiError(422, str(exc), param="strategy", code="unknown_strategy") from None
    except NoRoute as exc:
        raise no_route_error(create, catalog, exc) from None
    except ValueError as exc:  # e.g. manual strategy without a model
        raise ApiError(422, str(exc), param="strategy", code="invalid_routing") from None


def no_route_error(create: JobCreate, catalog: Catalog, exc: NoRoute) -> ApiError:
    """A 422 for a request every candidate refused; specific when they refused for one reason."""
    details = [
        {"deployment": e.deployment, "model": e.model, "filter": e.filter, "reason": e.reason}
        for e in exc.exclusions
    ]
    filters = {e.filter for e in exc.exclusions}
    if len(filters) != 1:
        return ApiError(422, str(exc), code="no_route", details=details)
    (only,) = filters
    if only == "capabilities":
        lacking = lacking_capabilities(create, catalog, exc.exclusions)
        if lacking:
            capability = lacking[0]
            models = ", ".join(sorted({repr(e.model) for e in exc.exclusions}))
            message = f"model {models} does not support {capability}: {exc}"
            return ApiError(
                422,
                message,
                param=capability_param(create, capability),
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


def lacking_capabilities(create: JobCreate, catalog: Catalog, exclusions: tuple[Exclusion, ...]) -> list[str]:
    """The capabilities the request needs that some excluded model lacks, in a stable order."""
    needed = create.chat_request().required_capabilities() | ({"streaming"} if create.stream else set())
    lacking: set[str] = set()
    for exclusion in exclusions:
        model = catalog.model(exclusion.model)
        if model is not None:
            lacking |= needed - set(model.capabilities)
    return sorted(lacking, key=list(PARAM_FOR_CAPABILITY).index)


def capability_param(create: JobCreate, capability: str) -> str:
    """Where in the request a capability is asked for; for vision, the first image part."""
    if capability == "vision":
        for i, message in enumerate(create.messages):
            if isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if part.type == "image_url":
                        return f"messages.{i}.content.{j}"
    return PARAM_FOR_CAPABILITY.get(capability, "messages")
