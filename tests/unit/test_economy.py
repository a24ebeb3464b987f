"""Economy mode's planning (routing/economy.py): provider batch or online for a group of jobs,
the split into provider batches within the provider's limits, and the words for each job."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.provider_batches import BatchInput, BatchLimits, provider_batch_spec
from core.types import ChatRequest
from routing.catalog import Deployment, catalog_from_dict, get_catalog
from routing.costs import estimate_batch_cost, estimate_cost
from routing.economy import (
    EconomyJob,
    EconomyPolicy,
    Route,
    estimate_line_bytes,
    online_duration_s,
    plan,
    plan_group,
    split_into_batches,
)

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
MB = 1024 * 1024


# The rate limits these plans were worked out with (the default catalog sets none: they are
# learned from the providers' headers).
RATE_LIMITS = {"openai/gpt-4o-mini": {"rpm": 10000, "tpm": 10_000_000}}


def dep(name: str) -> Deployment:
    found = get_catalog().deployment(name)
    assert found is not None
    if name in RATE_LIMITS:
        return replace(found, spec=found.spec.model_copy(update=RATE_LIMITS[name]))
    return found


def jobs(
    deployment: Deployment, count: int, tokens: int = 1000, out: int = 200, size: int = 3000
) -> list[EconomyJob]:
    return [EconomyJob(f"j{i}", deployment, tokens, out, size) for i in range(count)]


def custom_deployment(**deployment: Any) -> Deployment:
    """An OpenAI model with batch prices and one deployment with the given fields."""
    model = {
        "id": "m",
        "provider": "openai",
        "context_window": 100_000,
        "max_output_tokens": 1000,
        "input_price": "1.00",
        "output_price": "4.00",
        "batch_input_price": "0.50",
        "batch_output_price": "2.00",
        "quality": 50,
    }
    catalog = catalog_from_dict(
        {"models": [model], "deployments": [{"name": "d", "model": "m", **deployment}]}
    )
    return catalog.deployments["d"]


def test_a_far_deadline_goes_by_provider_batch_for_the_whole_window() -> None:
    group = jobs(dep("openai/gpt-4o-mini"), 5000)
    decision = plan_group(group, now=NOW, deadline=NOW + timedelta(days=3))
    assert decision.route is Route.PROVIDER_BATCH and not decision.online
    assert decision.give_up_at == NOW + timedelta(hours=24)
    assert [plan.job_ids for plan in decision.batches] == [tuple(j.job_id for j in group)]
    model = dep("openai/gpt-4o-mini").model
    assert decision.batch_cost_usd == 5000 * estimate_batch_cost(model, 1000, 200)
    assert decision.online_cost_usd == 5000 * estimate_cost(model, 1000, 200)
    assert decision.batch_cost_usd <= Decimal("0.52") * decision.online_cost_usd
    assert decision.reason == (
        "provider batch: openai batch API at $0.675 vs $1.35 online for 5000 jobs in 1 batch; "
        "deadline 2026-12-04T10:00Z allows the 24h window and 1h01min for online fallback"
    )
    record = decision.explanation("j7")
    assert record == {
        "deployment": "openai/gpt-4o-mini",
        "model": "gpt-4o-mini",
        "provider": "openai",
        "mode": "provider_batch",
        "batch": 0,
        "reason": decision.reason,
        "give_up_at": "2026-12-02T10:00Z",
    }
    json.dumps(record)


def test_a_24h_deadline_gives_the_provider_all_but_the_online_fallback_time() -> None:
    # 6M tokens at 10M tpm: 36 s online, twice that kept, on top of the hour's floor.
    group = jobs(dep("openai/gpt-4o-mini"), 5000)
    deadline = NOW + timedelta(hours=24)
    decision = plan_group(group, now=NOW, deadline=deadline)
    assert decision.route is Route.PROVIDER_BATCH
    assert decision.give_up_at == deadline - timedelta(hours=1, seconds=72)
    assert "deadline 2026-12-02T10:00Z allows 22h58min of the 24h window" in decision.reason
    assert "lines not done by 2026-12-02T08:58Z go online" in decision.reason


def test_the_online_fallback_time_grows_with_the_group_and_the_deployment_rpm() -> None:
    slow = custom_deployment(rpm=60)
    group = jobs(slow, 600)  # ten minutes online at 60 rpm
    assert online_duration_s(group, slow) == 600
    deadline = NOW + timedelta(hours=3)
    decision = plan_group(group, now=NOW, deadline=deadline)
    assert decision.give_up_at == deadline - timedelta(hours=1, minutes=20)
    by_tokens = custom_deployment(tpm=1_200_000)  # 600 x 1,200 tokens: 36 s at 1.2M tpm
    assert online_duration_s(group, by_tokens) == pytest.approx(36)
    assert online_duration_s(group, custom_deployment()) == 0


def test_a_deadline_too_close_goes_online_and_says_why() -> None:
    decision = plan_group(jobs(dep("openai/gpt-4o-mini"), 10), now=NOW, deadline=NOW + timedelta(minutes=90))
    assert decision.route is Route.ONLINE and decision.batches == () and decision.give_up_at is None
    assert decision.reason == (
        "online: deadline 2026-12-01T11:30Z leaves 29min after 1h kept for online fallback, "
        "less than the 1h a provider batch needs"
    )
    assert set(decision.online) == {f"j{i}" for i in range(10)}
    assert decision.explanation("j3")["mode"] == "online"
    patient = EconomyPolicy(min_batch_time_s=600)
    larger = jobs(dep("openai/gpt-4o-mini"), 100)
    decided = plan_group(larger, now=NOW, deadline=NOW + timedelta(minutes=90), policy=patient)
    assert decided.route is Route.PROVIDER_BATCH


def test_no_deadline_takes_the_whole_window() -> None:
    decision = plan_group(jobs(dep("anthropic/claude-haiku-4-5"), 100), now=NOW, deadline=None)
    assert decision.route is Route.PROVIDER_BATCH and decision.give_up_at == NOW + timedelta(hours=24)
    assert decision.reason.endswith("no deadline: the provider's 24h window")


def test_without_a_batch_api_or_batch_prices_a_group_goes_online() -> None:
    cohere = plan_group(jobs(dep("cohere/command-r7b"), 100), now=NOW, deadline=None)
    assert cohere.route is Route.ONLINE and cohere.reason == "online: cohere has no batch API in llmqueue"
    bedrock = plan_group(jobs(dep("bedrock/nova-lite"), 100), now=NOW, deadline=None)
    assert bedrock.reason == "online: bedrock has no batch API in llmqueue"  # priced, but no client
    unpriced = catalog_from_dict(
        {
            "models": [
                {
                    "id": "plain",
                    "provider": "openai",
                    "context_window": 1000,
                    "max_output_tokens": 100,
                    "input_price": "1",
                    "output_price": "1",
                    "quality": 1,
                }
            ],
            "deployments": [{"name": "p", "model": "plain"}],
        }
    ).deployments["p"]
    decision = plan_group(jobs(unpriced, 100), now=NOW, deadline=None)
    assert decision.reason == "online: plain has no batch prices in the catalog"


def test_a_saving_too_small_is_not_worth_the_wait() -> None:
    decision = plan_group(jobs(dep("openai/gpt-4o-mini"), 1, tokens=100, out=20), now=NOW, deadline=None)
    assert decision.route is Route.ONLINE
    assert decision.reason.startswith("online: a provider batch would save $0.000014 ($0.000014 vs $0.000027")
    one = jobs(dep("openai/gpt-4o-mini"), 1, tokens=100, out=20)
    cheap = EconomyPolicy(min_saving_usd=Decimal(0))
    assert plan_group(one, now=NOW, deadline=None, policy=cheap).route is Route.PROVIDER_BATCH
    stingy = EconomyPolicy(min_saving_fraction=0.6)  # batch prices save half: not enough for this policy
    assert plan_group(jobs(dep("openai/gpt-4o-mini"), 5000), now=NOW, deadline=None, policy=stingy).route is (
        Route.ONLINE
    )


LIMITS = BatchLimits(
    max_lines=3,
    max_bytes=1000,
    window_s=86400,
    expires_after_s=86400,
    enqueued_tokens=None,
    input=BatchInput.FILE,
)


def test_split_respects_lines_per_batch_and_keeps_the_order() -> None:
    group = jobs(custom_deployment(), 8, size=100)
    batches, left_out = split_into_batches(group, LIMITS)
    assert [b.job_ids for b in batches] == [("j0", "j1", "j2"), ("j3", "j4", "j5"), ("j6", "j7")]
    assert [b.input_tokens for b in batches] == [3000, 3000, 2000] and left_out == {}
    assert [b.input_bytes for b in batches] == [303, 303, 202]  # each line and its newline


def test_split_respects_bytes_per_batch_and_sends_an_oversized_line_online() -> None:
    d = custom_deployment()
    group = [
        EconomyJob("a", d, 10, 1, 400),
        EconomyJob("big", d, 10, 1, 1000),
        EconomyJob("b", d, 10, 1, 400),
    ]
    group += [EconomyJob("c", d, 10, 1, 400)]
    batches, left_out = split_into_batches(group, LIMITS)
    assert [b.job_ids for b in batches] == [("a", "b"), ("c",)]
    assert max(b.input_bytes for b in batches) <= LIMITS.max_bytes
    assert left_out == {"big": "online: its request is 1000 bytes, more than a provider batch takes (1000)"}


def test_split_respects_the_enqueued_token_quota() -> None:
    group = jobs(custom_deployment(), 5, tokens=100, size=10)
    batches, left_out = split_into_batches(group, replace(LIMITS, max_lines=None), enqueued_free=250)
    assert [b.job_ids for b in batches] == [("j0", "j1")]
    assert left_out["j2"] == "online: the enqueued-token quota of d is full (100 tokens needed, 50 free)"
    assert set(left_out) == {"j2", "j3", "j4"}


def test_the_deployment_quota_and_what_is_in_use_bound_a_group() -> None:
    quota = custom_deployment(batch_enqueued_tokens=2_000_000)
    group = jobs(quota, 1000, tokens=1000, size=100)
    decision = plan_group(group, now=NOW, deadline=None, enqueued_in_use=1_500_000)
    assert decision.route is Route.PROVIDER_BATCH
    batched = [job_id for b in decision.batches for job_id in b.job_ids]
    assert batched == [f"j{i}" for i in range(500)] and len(decision.online) == 500
    assert decision.explanation("j600")["reason"].startswith("online: the enqueued-token quota of d is full")
    assert decision.explanation("j6")["mode"] == "provider_batch"
    assert decision.batch_cost_usd == 500 * estimate_batch_cost(quota.model, 1000, 200)
    full = plan_group(group, now=NOW, deadline=None, enqueued_in_use=2_000_000)
    assert full.route is Route.ONLINE and full.reason == "online: no job fits a provider batch"


def test_every_job_is_planned_exactly_once() -> None:
    limits = provider_batch_spec("openai")
    assert limits is not None and limits.limits.max_lines == 50_000
    group = jobs(dep("openai/gpt-4o-mini"), 120_001, tokens=10, out=10, size=100)
    decision = plan_group(group, now=NOW, deadline=None)
    assert [len(b.job_ids) for b in decision.batches] == [50_000, 50_000, 20_001]
    planned = [job_id for b in decision.batches for job_id in b.job_ids] + list(decision.online)
    assert sorted(planned) == sorted(j.job_id for j in group)
    assert "in 3 batches" in decision.reason


def test_plan_groups_by_deployment() -> None:
    mixed = [
        *jobs(dep("openai/gpt-4o-mini"), 3),
        EconomyJob("m0", dep("mistral/mistral-small"), 1000, 200, 3000),
        EconomyJob("c0", dep("cohere/command-r7b"), 1000, 200, 3000),
    ]
    decisions = plan(mixed, now=NOW, deadline=None, policy=EconomyPolicy(min_saving_usd=Decimal(0)))
    assert [(d.deployment.name, d.route) for d in decisions] == [
        ("openai/gpt-4o-mini", Route.PROVIDER_BATCH),
        ("mistral/mistral-small", Route.PROVIDER_BATCH),
        ("cohere/command-r7b", Route.ONLINE),
    ]
    with pytest.raises(ValueError, match="one deployment"):
        plan_group(mixed, now=NOW, deadline=None)


def test_a_line_size_estimate_without_a_client() -> None:
    request = ChatRequest.model_validate({"messages": [{"role": "user", "content": "x" * 5000}]})
    assert 5000 < estimate_line_bytes(request) < 5400
