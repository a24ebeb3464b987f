"""Spend: what calls cost, summed from attempts and grouped by key, model, provider, day or tag.

Money is attributed to the attempt that spent it: its model, its provider, the UTC day it
ended. A job that failed over from model A to model B shows its cost under B, and a job that
failed without spending shows nowhere (an attempt counts when it succeeded or cost
something). So the groups of any one dimension sum exactly to the attempts' costs.

A job's tags are the strings in its metadata's `tags`: a JSON list of strings, or one string
of comma-separated tags (OpenAI-style metadata holds only strings, so chat completions and
batch lines write `"tags": "etl,nightly"`). A job with several tags counts in each of their
groups, so tag groups may sum to more than the total; a job without tags is in the `None` group.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, func, or_, select
from sqlalchemy.orm import Session

from jobstore.models import Attempt, AttemptStatus, Job

TAGS_METADATA_KEY = "tags"


class SpendDimension(StrEnum):
    KEY = "key"  # the API key that owns the job
    MODEL = "model"  # the model the attempt called
    PROVIDER = "provider"
    DAY = "day"  # the UTC day the attempt ended, YYYY-MM-DD
    TAG = "tag"  # each of the job's metadata tags


@dataclass
class SpendGroup:
    """One group's sums. `group` maps each requested dimension to its value."""

    group: dict[str, str | None]
    calls: int = 0  # attempts that spent (or succeeded)
    jobs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = field(default_factory=lambda: Decimal(0))


def _spent_at() -> ColumnElement[Any]:
    return func.coalesce(Attempt.finished_at, Attempt.started_at, Attempt.created_at)


def _day(session: Session) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", _spent_at()), "YYYY-MM-DD")
    return func.date(_spent_at())  # SQLite stores UTC text


def _filtered(
    query: Select[Any], owner_ids: Sequence[str] | None, since: datetime | None, until: datetime | None
) -> Select[Any]:
    query = query.select_from(Attempt).join(Job, Job.id == Attempt.job_id)
    query = query.where(or_(Attempt.status == AttemptStatus.SUCCEEDED.value, Attempt.cost_usd != 0))
    if owner_ids is not None:
        query = query.where(Job.owner_id.in_(list(owner_ids)))
    if since is not None:
        query = query.where(_spent_at() >= since)
    if until is not None:
        query = query.where(_spent_at() < until)
    return query


def _sums() -> list[ColumnElement[Any]]:
    return [
        func.count(Attempt.id),
        func.count(func.distinct(Job.id)),
        func.coalesce(func.sum(Attempt.input_tokens), 0),
        func.coalesce(func.sum(Attempt.output_tokens), 0),
        func.coalesce(func.sum(Attempt.cost_usd), 0),
    ]


def parse_tags(raw: Any) -> list[str]:
    """The tags a stored `tags` value holds (as the database returns it as text)."""
    if raw is None:
        return []
    value: Any = raw
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list):
        return [str(t).strip() for t in value if isinstance(t, str | int) and str(t).strip()]
    return []


def spend(
    session: Session,
    group_by: Sequence[SpendDimension],
    *,
    owner_ids: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[list[SpendGroup], SpendGroup]:
    """The groups (sorted by their values) and the total, of these keys' spend (all keys' when
    `owner_ids` is None) between `since` (inclusive) and `until` (exclusive)."""
    columns: dict[SpendDimension, SQLColumnExpression[Any]] = {
        SpendDimension.KEY: Job.owner_id,
        SpendDimension.MODEL: Attempt.model,
        SpendDimension.PROVIDER: Attempt.provider,
        SpendDimension.DAY: _day(session),
        SpendDimension.TAG: Job.job_metadata[TAGS_METADATA_KEY].as_string(),
    }
    chosen = [columns[d] for d in group_by]
    rows = session.execute(
        _filtered(select(*chosen, *_sums()), owner_ids, since, until).group_by(*chosen)
    ).all()
    groups: dict[tuple[str | None, ...], SpendGroup] = {}
    for row in rows:
        values, (calls, jobs, input_tokens, output_tokens, cost) = row[: len(chosen)], row[len(chosen) :]
        for combination in _expand(group_by, values):
            group = groups.get(combination)
            if group is None:
                group = groups[combination] = SpendGroup(dict(zip(group_by, combination, strict=True)))
            group.calls += int(calls)
            group.jobs += int(jobs)
            group.input_tokens += int(input_tokens)
            group.output_tokens += int(output_tokens)
            group.cost_usd += Decimal(cost)
    calls, jobs, input_tokens, output_tokens, cost = session.execute(
        _filtered(select(*_sums()), owner_ids, since, until)
    ).one()
    total = SpendGroup({}, int(calls), int(jobs), int(input_tokens), int(output_tokens), Decimal(cost))
    ordered = sorted(groups.items(), key=lambda item: tuple((v is None, v or "") for v in item[0]))
    return [group for _, group in ordered], total


def _expand(group_by: Sequence[SpendDimension], values: Sequence[Any]) -> list[tuple[str | None, ...]]:
    """The group keys one SQL row contributes to: one, or one per tag."""
    combinations: list[tuple[str | None, ...]] = [()]
    for dimension, value in zip(group_by, values, strict=True):
        if dimension == SpendDimension.TAG:
            options: list[str | None] = list(dict.fromkeys(parse_tags(value))) or [None]
        else:
            options = [None if value is None else str(value)]
        combinations = [(*c, o) for c in combinations for o in options]
    return combinations
