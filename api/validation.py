"""Checks a submission must pass before it is accepted: the model exists, max_tokens fits it,
the strategy is known, and at least one deployment can serve the request (capabilities,
context window, floors and ceilings). Routing is asked exactly as the dispatcher will ask
it, without health (a deployment that is down now may be up at dispatch)."""

from __future__ import annotations

import random
import time
from decimal import Decimal

from api.errors import ApiError
from api.schemas.jobs import JobCreate
from routing.catalog import Catalog
from routing.router import NoRoute, RoutingDecision, RoutingRequest, UnknownModel, UnknownStrategy, route

# Which request field to blame for each filter that excluded every candidate.
PARAM_FOR_FILTER = {
    "capabilities": "messages",
    "max_output": "max_tokens",
    "context": "messages",
    "quality": "min_quality",
    "cost_ceiling": "max_cost_usd",
    "budget": "Authorization",
}
PARAM_FOR_CAPABILITY = {
    "tools": "tools",
    "json_mode": "response_format",
    "json_schema": "response_format",
    "vision": "messages",
    "streaming": "stream",
}


def routing_request(create: JobCreate, budget_remaining: Decimal | None) -> RoutingRequest:
    return RoutingRequest(
        request=create.chat_request(),
        model=create.model,
        strategy=create.strategy,
        fallbacks=tuple(create.fallbacks),
        cost_weight=create.cost_weight,
        min_quality=create.min_quality,
        max_cost_usd=create.max_cost_usd,
        budget_remaining_usd=budget_remaining,
        stream=create.stream,
    )


def check_routable(create: JobCreate, catalog: Catalog, budget_remaining: Decimal | None) -> RoutingDecision:
    """The routing preview for a submission, or an ApiError naming what is wrong and where."""
    try:
        return route(
            routing_request(create, budget_remaining), catalog, {}, now=time.time(), rng=random.Random(0)
        )
    except UnknownModel as exc:
        raise ApiError(422, str(exc), param="model", code="model_not_found") from None
    except UnknownStrategy as exc:
        raise ApiError(422, str(exc), param="strategy", code="unknown_strategy") from None
    except NoRoute as exc:
        filters = {e.filter for e in exc.exclusions}
        param = PARAM_FOR_FILTER.get(next(iter(filters))) if len(filters) == 1 else None
        code = f"unsupported_{next(iter(filters))}" if len(filters) == 1 else "no_route"
        if filters == {"capabilities"}:
            needed = create.chat_request().required_capabilities() | (
                {"streaming"} if create.stream else set()
            )
            lacking = sorted(
                c for c in needed if any(c in e.reason.split("lacks", 1)[-1] for e in exc.exclusions)
            )
            if lacking:
                param = PARAM_FOR_CAPABILITY.get(lacking[0], param)
                code = f"unsupported_capability:{lacking[0]}"
        details = [
            {"deployment": e.deployment, "model": e.model, "filter": e.filter, "reason": e.reason}
            for e in exc.exclusions
        ]
        raise ApiError(422, str(exc), param=param, code=code, details=details) from None
    except ValueError as exc:  # e.g. manual strategy without a model
        raise ApiError(422, str(exc), param="strategy", code="invalid_routing") from None
