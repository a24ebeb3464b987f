"""Where the Spend and Keys pages get their data: `GET /v1/spend` and the `/v1/keys` routes.

The pages are built against these shapes, and only this module knows where they come from:

    spend row   {"group": {"day"|"model"|"provider"|"key"|"tag": str | None}, "cost_usd": str,
                 "jobs": int, "input_tokens": int, "output_tokens": int}
    key         {"id", "name", "prefix", "role", "created_at", "revoked_at",
                 "budget": {"limit_usd", "period", "soft_limit_usd", "spent_usd",
                            "reserved_usd"} | None}

Both come from the JSON API through `internal.py`, as the signed-in key (the API decides
what a member or an admin may see and do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from api.console.internal import ApiProblem, InternalApi


class SpendBy(StrEnum):
    DAY = "day"
    MODEL = "model"
    PROVIDER = "provider"
    KEY = "key"
    TAG = "tag"


class Unavailable(Exception):
    """The route this needs is not on this server; the message says which."""


@dataclass
class SpendReport:
    by: SpendBy
    rows: list[dict[str, Any]]
    total: dict[str, Any] | None
    source: str  # the route the figures came from
    key_names: dict[str, str] = field(default_factory=dict)


async def spend(api: InternalApi, by: SpendBy, since: str | None = None) -> SpendReport:
    params: dict[str, Any] = {"group_by": by.value}
    if since:
        params["since"] = since
    report = await api.get("/v1/spend", params)
    return SpendReport(
        by=by,
        rows=list(report["data"]),
        total=report.get("total"),
        source="GET /v1/spend",
        key_names=dict(report.get("key_names") or {}),
    )


async def _keys_call(coro: Any) -> Any:
    try:
        return await coro
    except ApiProblem as exc:
        if exc.route_missing:
            raise Unavailable(
                "key management needs the /v1/keys routes, which this server does not have yet; "
                "meanwhile create keys with 'llmqueue keys create'"
            ) from None
        raise


async def list_keys(api: InternalApi) -> list[dict[str, Any]]:
    found = await _keys_call(api.get("/v1/keys"))
    return list(found["data"])


async def create_key(
    api: InternalApi, name: str, role: str, budget: dict[str, Any] | None
) -> tuple[dict[str, Any], str]:
    """The new key, and its secret (shown once)."""
    body: dict[str, Any] = {"name": name, "role": role}
    if budget is not None:
        body["budget"] = budget
    created = await _keys_call(api.post("/v1/keys", json=body))
    return created, str(created["secret"])


async def revoke_key(api: InternalApi, key_id: str) -> dict[str, Any]:
    revoked: dict[str, Any] = await _keys_call(api.post(f"/v1/keys/{key_id}/revoke"))
    return revoked


async def set_budget(api: InternalApi, key_id: str, budget: dict[str, Any]) -> dict[str, Any]:
    """`budget`: limit_usd (None removes it), period, soft_limit_usd."""
    updated: dict[str, Any] = await _keys_call(api.put(f"/v1/keys/{key_id}/budget", json=budget))
    return updated
