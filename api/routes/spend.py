"""GET /v1/spend: what calls cost, grouped by key, model, provider, day and tag.

Summed from attempts (`jobstore/spend.py`): cost is attributed to the model and provider that
spent it, on the UTC day the call ended; a job that failed without spending is listed
nowhere. A member sees its own spend; an admin sees every key's, or those named by `key`.
Tags are the strings of a job's metadata `tags` (a list, or one comma-separated string).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import OwnerDep, SessionDep, is_admin
from api.errors import ApiError
from core.clock import aware
from jobstore import keys
from jobstore.spend import SpendDimension, SpendGroup, spend

router = APIRouter(prefix="/v1/spend", tags=["spend"])


class SpendRow(BaseModel):
    group: dict[str, str | None] = Field(description="The value of each group_by dimension.")
    calls: int = Field(description="Provider calls that spent (or succeeded).")
    jobs: int
    input_tokens: int
    output_tokens: int
    cost_usd: str = Field(description="Decimal USD, every digit.")

    @classmethod
    def of(cls, group: SpendGroup) -> SpendRow:
        return cls(
            group=group.group,
            calls=group.calls,
            jobs=group.jobs,
            input_tokens=group.input_tokens,
            output_tokens=group.output_tokens,
            cost_usd=f"{group.cost_usd:f}",
        )


class SpendReport(BaseModel):
    object: str = "spend"
    group_by: list[SpendDimension]
    since: datetime | None
    until: datetime | None
    scope: str = Field(description="'self', 'all' (an admin, every key) or the keys asked for.")
    data: list[SpendRow]
    total: SpendRow = Field(description="Every call in scope once (tag groups may sum to more).")
    key_names: dict[str, str] = Field(description="The names of the keys in the groups, by id.")


def parse_time(value: str | None, param: str) -> datetime | None:
    """An ISO date (2026-11-01, its 00:00 UTC) or datetime; naive values are UTC."""
    if value is None:
        return None
    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        raise ApiError(
            422,
            f"{param}: expected an ISO date like 2026-11-01 or a datetime, got {value!r}",
            param=param,
            code="invalid_value",
        ) from None


def parse_group_by(values: list[str]) -> list[SpendDimension]:
    """Dimensions from repeated or comma-separated values, each once, in the order given."""
    chosen: list[SpendDimension] = []
    for raw in (part.strip() for value in values for part in value.split(",")):
        if not raw:
            continue
        try:
            dimension = SpendDimension(raw)
        except ValueError:
            options = ", ".join(d.value for d in SpendDimension)
            raise ApiError(
                422, f"group_by: {raw!r} is not one of {options}", param="group_by", code="invalid_value"
            ) from None
        if dimension not in chosen:
            chosen.append(dimension)
    return chosen


@router.get("", response_model=SpendReport)
def read_spend(
    session: SessionDep,
    owner: OwnerDep,
    group_by: Annotated[
        list[str], Query(description="key, model, provider, day, tag: repeated or comma-separated.")
    ] = ["model"],  # noqa: B006  (FastAPI copies query defaults)
    since: Annotated[
        str | None, Query(description="From this ISO date or datetime (UTC), inclusive.")
    ] = None,
    until: Annotated[
        str | None, Query(description="Up to this ISO date or datetime (UTC), exclusive.")
    ] = None,
    key: Annotated[list[str] | None, Query(description="Admins: only these key ids.")] = None,
) -> SpendReport:
    """Spend summed from every provider call, grouped as asked. Admins see all keys."""
    dimensions = parse_group_by(group_by)
    start, end = parse_time(since, "since"), parse_time(until, "until")
    if start is not None and end is not None and end <= start:
        raise ApiError(422, "until must be after since", param="until", code="invalid_value")
    if is_admin(owner):
        owner_ids, scope = (key, ",".join(key)) if key else (None, "all")
    elif key and set(key) != {owner.id}:
        raise ApiError(403, "only an admin key sees other keys' spend", param="key", code="admin_required")
    else:
        owner_ids, scope = [owner.id], "self"
    groups, total = spend(session, dimensions, owner_ids=owner_ids, since=start, until=end)
    names: dict[str, str] = {}
    if SpendDimension.KEY in dimensions:
        ids = {g.group[SpendDimension.KEY] for g in groups} - {None}
        names = {k.id: k.name for k in keys.named(session, [i for i in ids if i is not None])}
    return SpendReport(
        group_by=dimensions,
        since=start,
        until=end,
        scope=scope,
        data=[SpendRow.of(g) for g in groups],
        total=SpendRow.of(total),
        key_names=names,
    )
