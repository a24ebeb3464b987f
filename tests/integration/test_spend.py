"""GET /v1/spend and `llmqueue costs` on the real stack: spend summed from the attempts that
spent it (a failover's cost under the model that answered, a failed job nowhere), grouped by
key, model, provider, day and tag, summing exactly to the attempts' costs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from jobstore.db import transaction
from jobstore.models import Attempt, Job
from tests.integration.conftest import Stack
from tests.integration.test_cli import cli


def job(text: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "model": model, "max_tokens": 30, **extra}


def attempt_costs(owner_id: str) -> list[tuple[str, Decimal]]:
    with transaction() as session:
        rows = session.execute(
            select(Attempt.model, Attempt.cost_usd)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.owner_id == owner_id)
        ).all()
    return [(model, Decimal(cost)) for model, cost in rows]


def spend(stack: Stack, **params: Any) -> dict[str, Any]:
    r = stack.client.get("/v1/spend", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def by(report: dict[str, Any], dimension: str) -> dict[str | None, dict[str, Any]]:
    return {row["group"][dimension]: row for row in report["data"]}


def test_spend_is_attributed_to_the_attempts_that_spent_it(stack: Stack, admin_stack: Stack) -> None:
    stack.emulator.configure(
        {
            "mistral-small-latest": {"script": [{"status": 400, "message": "Invalid request: no."}]},
            "gpt-4.1": {"outage": True},
        }
    )
    ids = {
        "tagged": stack.submit(job("one", "gpt-4o-mini", metadata={"tags": ["etl", "nightly"]})).json()["id"],
        "string_tag": stack.submit(job("two", "claude-haiku-4-5", metadata={"tags": "etl"})).json()["id"],
        "plain": stack.submit(job("three", "gpt-4o-mini")).json()["id"],
        "failed": stack.submit(job("four", "mistral-small-latest")).json()["id"],
        "failover": stack.submit(job("five", "gpt-4.1", fallbacks=["claude-haiku-4-5"])).json()["id"],
    }
    jobs = {name: stack.wait(job_id) for name, job_id in ids.items()}
    assert jobs["failed"]["status"] == "failed" and Decimal(jobs["failed"]["cost_usd"]) == 0
    failover = jobs["failover"]
    assert failover["status"] == "succeeded" and failover["model"] == "claude-haiku-4-5"
    assert failover["attempts"][0]["model"] == "gpt-4.1" and failover["attempts"][0]["status"] == "failed"

    owner_id = stack.client.get("/v1/keys/self").json()["id"]
    costs = attempt_costs(owner_id)
    spent = sum((c for _, c in costs), Decimal(0))
    assert spent > 0 and spent == sum(Decimal(j["cost_usd"]) for j in jobs.values())

    models = spend(stack, group_by="model")
    assert models["scope"] == "self" and models["group_by"] == ["model"]
    assert set(by(models, "model")) == {
        "gpt-4o-mini",
        "claude-haiku-4-5",
    }  # not gpt-4.1, not mistral-small-latest
    for model, row in by(models, "model").items():
        assert Decimal(row["cost_usd"]) == sum(c for m, c in costs if m == model)
    assert by(models, "model")["claude-haiku-4-5"]["calls"] == 2
    assert (
        sum(Decimal(r["cost_usd"]) for r in models["data"]) == Decimal(models["total"]["cost_usd"]) == spent
    )
    assert models["total"]["jobs"] == 4 and models["total"]["calls"] == 4

    providers = spend(stack, group_by="provider")
    assert set(by(providers, "provider")) == {"openai", "anthropic"}
    assert sum(Decimal(r["cost_usd"]) for r in providers["data"]) == spent

    days = spend(stack, group_by="day")
    assert list(by(days, "day")) == [datetime.now(UTC).strftime("%Y-%m-%d")]
    assert Decimal(days["data"][0]["cost_usd"]) == spent

    tags = by(spend(stack, group_by="tag"), "tag")
    assert set(tags) == {"etl", "nightly", None}
    cost = {name: Decimal(j["cost_usd"]) for name, j in jobs.items()}
    assert Decimal(tags["etl"]["cost_usd"]) == cost["tagged"] + cost["string_tag"]
    assert Decimal(tags["nightly"]["cost_usd"]) == cost["tagged"]
    assert Decimal(tags[None]["cost_usd"]) == cost["plain"] + cost["failover"]

    combined = spend(stack, group_by=["model", "tag"])
    assert {(r["group"]["model"], r["group"]["tag"]) for r in combined["data"]} == {
        ("claude-haiku-4-5", "etl"),
        ("claude-haiku-4-5", None),
        ("gpt-4o-mini", "etl"),
        ("gpt-4o-mini", "nightly"),
        ("gpt-4o-mini", None),
    }
    assert spend(stack, group_by="provider,day")["group_by"] == ["provider", "day"]

    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert spend(stack, since=tomorrow)["data"] == []
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert spend(stack, until=today)["data"] == []
    assert Decimal(spend(stack, since=today, until=tomorrow)["total"]["cost_usd"]) == spent

    # An admin sees every key; `key` narrows it to some.
    everyone = by(spend(admin_stack, group_by="key"), "key")
    assert Decimal(everyone[owner_id]["cost_usd"]) == spent
    only = spend(admin_stack, group_by="key", key=owner_id)
    assert list(by(only, "key")) == [owner_id] and only["key_names"] == {owner_id: "test"}

    # `llmqueue costs` shows the same, through the API.
    result = cli(stack, "costs", "--by", "model", "--by", "tag", "--json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert reports[0]["data"] == models["data"] and reports[1]["group_by"] == ["tag"]
    table = cli(stack, "costs", "--by", "model,day")
    assert table.returncode == 0 and "spend by model, day (your key)" in table.stdout
    assert "claude-haiku-4-5" in table.stdout and "gpt-4.1" not in table.stdout


def test_a_member_sees_only_its_own_spend(stack: Stack, admin_stack: Stack) -> None:
    admin_stack.client.post("/v1/providers/openai/test").raise_for_status()  # the admin spends
    mine = spend(stack, group_by="key")
    assert mine["data"] == [] and Decimal(mine["total"]["cost_usd"]) == 0
    admin_id = admin_stack.client.get("/v1/keys/self").json()["id"]
    r = stack.client.get("/v1/spend", params={"key": admin_id})
    assert r.status_code == 403 and r.json()["error"]["param"] == "key"
    denied = cli(stack, "costs", "--key", admin_id)
    assert denied.returncode == 1 and "only an admin key" in denied.stderr


def test_bad_spend_parameters_name_the_parameter(stack: Stack) -> None:
    for params, param in (
        ({"group_by": "colour"}, "group_by"),
        ({"since": "last tuesday"}, "since"),
        ({"since": "2026-12-02", "until": "2026-12-01"}, "until"),
    ):
        r = stack.client.get("/v1/spend", params=params)
        assert r.status_code == 422 and r.json()["error"]["param"] == param, r.text
