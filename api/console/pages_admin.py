"""Spend (any key: its own; an admin: every key's), and the admin pages: keys and providers.

Spend and keys come through `admin_api.py`, the one module that knows their routes; the
providers page is `GET /v1/providers` and `POST /v1/providers/{name}/test`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from starlette.responses import Response

from api.console import admin_api
from api.console.admin_api import SpendBy, Unavailable
from api.console.base import ConsoleRoute, FormViewerDep, ViewerDep, render, require_admin, usd
from api.console.charts import Bar, bars, columns
from api.console.internal import ApiProblem

router = APIRouter(route_class=ConsoleRoute)
PERIODS = ("lifetime", "day", "week", "month")


def _label(by: SpendBy, row: dict[str, Any], key_names: dict[str, str]) -> str:
    value = row["group"].get(by.value)
    if value is None:
        return "(none)"
    return f"{key_names[value]} ({value})" if by == SpendBy.KEY and value in key_names else str(value)


@router.get("/spend")
async def spend_page(request: Request, who: ViewerDep, by: str = "day", since: str = "") -> Response:
    try:
        chosen = SpendBy(by)
    except ValueError:
        raise ApiProblem(
            422, {"message": f"by: {by!r} is not one of {', '.join(b.value for b in SpendBy)}", "param": "by"}
        ) from None
    context: dict[str, Any] = {"by": chosen, "dimensions": list(SpendBy), "since": since}
    try:
        report = await admin_api.spend(who.api, chosen, since or None)
    except Unavailable as exc:
        return render(request, who, "spend.html", unavailable=str(exc), report=None, chart=None, **context)
    labelled = [(_label(chosen, r, report.key_names), r) for r in report.rows]
    if chosen == SpendBy.DAY:
        ordered = sorted(labelled, key=lambda item: item[0])
        chart = columns([Bar(label, float(r["cost_usd"]), usd(r["cost_usd"])) for label, r in ordered])
    else:
        ordered = sorted(labelled, key=lambda item: Decimal(item[1]["cost_usd"]), reverse=True)
        chart = bars([Bar(label, float(r["cost_usd"]), usd(r["cost_usd"])) for label, r in ordered])
    return render(
        request, who, "spend.html", unavailable=None, report=report, rows=ordered, chart=chart, **context
    )


# ---------------------------------------------------------------- keys (admin)


async def _keys_page(request: Request, who: Any, **extra: Any) -> Response:
    try:
        keys = await admin_api.list_keys(who.api)
        unavailable = None
    except Unavailable as exc:
        keys, unavailable = [], str(exc)
    return render(request, who, "keys.html", keys=keys, unavailable=unavailable, periods=PERIODS, **extra)


@router.get("/admin/keys")
async def keys_page(request: Request, who: ViewerDep) -> Response:
    require_admin(who)
    return await _keys_page(request, who)


def _money(value: str, param: str) -> Decimal | None:
    if not value.strip():
        return None
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise ApiProblem(
            422, {"message": f"{param}: {value!r} is not an amount in USD", "param": param}
        ) from None
    return amount


def _budget(limit: str, period: str, soft: str) -> dict[str, Any] | None:
    limit_usd = _money(limit, "limit_usd")
    if limit_usd is None:
        return None
    soft_usd = _money(soft, "soft_limit_usd")
    return {
        "limit_usd": str(limit_usd),
        "period": period,
        "soft_limit_usd": None if soft_usd is None else str(soft_usd),
    }


@router.post("/admin/keys")
async def create_key(
    request: Request,
    who: FormViewerDep,
    name: Annotated[str, Form(min_length=1, max_length=200)],
    role: Annotated[str, Form()] = "member",
    limit_usd: Annotated[str, Form()] = "",
    period: Annotated[str, Form()] = "lifetime",
    soft_limit_usd: Annotated[str, Form()] = "",
) -> Response:
    require_admin(who)
    try:
        created, secret = await admin_api.create_key(
            who.api, name, role, _budget(limit_usd, period, soft_limit_usd)
        )
    except Unavailable as exc:
        return await _keys_page(request, who, notice=str(exc))
    return await _keys_page(request, who, created=created, secret=secret)


@router.post("/admin/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, who: FormViewerDep) -> Response:
    require_admin(who)
    await admin_api.revoke_key(who.api, key_id)
    return await _keys_page(request, who, notice=f"revoked {key_id}")


@router.post("/admin/keys/{key_id}/budget")
async def set_budget(
    request: Request,
    key_id: str,
    who: FormViewerDep,
    limit_usd: Annotated[str, Form()] = "",
    period: Annotated[str, Form()] = "lifetime",
    soft_limit_usd: Annotated[str, Form()] = "",
) -> Response:
    require_admin(who)
    budget = _budget(limit_usd, period, soft_limit_usd) or {"limit_usd": None}
    await admin_api.set_budget(who.api, key_id, budget)
    return await _keys_page(request, who, notice=f"budget of {key_id} saved")


# ---------------------------------------------------------------- providers (admin)


@router.get("/admin/providers")
async def providers_page(request: Request, who: ViewerDep) -> Response:
    require_admin(who)
    providers = await who.api.get("/v1/providers")
    return render(request, who, "providers.html", providers=providers)


@router.post("/admin/providers/{name}/test")
async def test_provider(
    request: Request, name: str, who: FormViewerDep, deployment: Annotated[str, Form()] = ""
) -> Response:
    require_admin(who)
    body = {"deployment": deployment} if deployment and deployment != name else {}
    result = await who.api.post(f"/v1/providers/{name}/test", json=body or None)
    return render(request, who, "_provider_test.html", result=result)
