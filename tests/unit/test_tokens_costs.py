"""Token counts before dispatch and cost settlement after a call, in exact Decimal."""

from __future__ import annotations

from decimal import Decimal

import bpe_openai
import pytest

from core.providers import PROVIDERS
from core.types import ChatRequest, Usage
from routing.catalog import ModelSpec, get_catalog
from routing.costs import estimate_cost, expected_output_tokens, settle_cost
from routing.tokens import PER_MESSAGE_OVERHEAD, count_request_tokens, count_text

PROSE = (
    "llmqueue runs generation jobs asynchronously: a thin API enqueues them, a dispatcher routes "
    "each to a provider's queue, and workers call the official SDKs. Ünïcode, emoji 🚀 and code `x = 1`."
)


def model(**prices: str) -> ModelSpec:
    return ModelSpec(
        id="m",
        provider="openai",
        context_window=1000,
        max_output_tokens=100,
        quality=50,
        **{k: Decimal(v) for k, v in prices.items()},
    )


def request(*texts: str) -> ChatRequest:
    return ChatRequest.model_validate({"messages": [{"role": "user", "content": t} for t in texts]})


def test_openai_text_count_is_o200k_exactly() -> None:
    assert count_text(PROSE) == len(bpe_openai.get_encoding("o200k_base").encode(PROSE))
    assert count_text("") == 0


@pytest.mark.parametrize("provider", ["openai", "azure"])
def test_an_openai_family_request_is_its_texts_o200k_count_plus_fixed_overheads(provider: str) -> None:
    texts = (PROSE, "second message", "third")
    expected = 3 + sum(PER_MESSAGE_OVERHEAD + count_text(t) for t in texts)
    assert count_request_tokens(request(*texts), provider) == expected


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p not in ("openai", "azure")])
def test_other_providers_estimates_never_undercount_the_openai_count(provider: str) -> None:
    req = request(PROSE, PROSE.upper())
    assert count_request_tokens(req, provider) >= count_request_tokens(req, "openai")


def test_settlement_is_usage_times_price_exactly() -> None:
    m = model(input_price="0.15", output_price="0.60")
    cost = settle_cost(m, Usage(input_tokens=1234, output_tokens=567))
    assert cost == Decimal("0.00052530")  # (1234 * 0.15 + 567 * 0.60) / 1e6 = 0.0005253
    assert isinstance(cost, Decimal)


def test_cached_input_tokens_are_billed_at_the_cached_price() -> None:
    m = model(input_price="2.50", cached_input_price="1.25", output_price="10.00")
    cost = settle_cost(m, Usage(input_tokens=10_000, cached_input_tokens=8_000, output_tokens=1_000))
    # 2000 uncached * 2.50 + 8000 cached * 1.25 + 1000 out * 10.00 = 5000 + 10000 + 10000 per million
    assert cost == Decimal("0.02500000")


def test_a_model_without_a_cached_price_bills_cached_tokens_at_the_input_price() -> None:
    m = model(input_price="0.10", output_price="0.30")
    with_cache = settle_cost(m, Usage(input_tokens=1000, cached_input_tokens=900, output_tokens=10))
    assert with_cache == settle_cost(m, Usage(input_tokens=1000, output_tokens=10)) == Decimal("0.00010300")


def test_cached_tokens_beyond_the_input_are_capped() -> None:
    m = model(input_price="1", cached_input_price="0.1", output_price="1")
    assert settle_cost(m, Usage(input_tokens=100, cached_input_tokens=500)) == Decimal("0.00001000")


def test_settlement_rounds_half_up_to_1e_8_once() -> None:
    m = model(input_price="0.005", output_price="0")
    assert settle_cost(m, Usage(input_tokens=1)) == Decimal("0.00000001")  # 0.000000005 -> up
    assert settle_cost(m, Usage(input_tokens=3)) == Decimal("0.00000002")  # 0.000000015 -> up


def test_every_catalog_price_settles_exactly() -> None:
    usage = Usage(input_tokens=987_654, cached_input_tokens=123_456, output_tokens=54_321)
    for spec in get_catalog().models.values():
        cached = spec.cached_input_price if spec.cached_input_price is not None else spec.input_price
        exact = (864_198 * spec.input_price + 123_456 * cached + 54_321 * spec.output_price) / 1_000_000
        assert settle_cost(spec, usage) == exact.quantize(Decimal("0.00000001")), spec.id


def test_estimate_assumes_no_cache_discount_and_caps_output_at_the_models_limit() -> None:
    m = model(input_price="1", cached_input_price="0.1", output_price="2")
    assert estimate_cost(m, 1000, 50) == Decimal("0.00110000")
    assert expected_output_tokens(m, 5000, 10) == 100
    assert expected_output_tokens(m, None, 40_000) == 100
    assert expected_output_tokens(m.model_copy(update={"max_output_tokens": 4096}), None, 400) == 100


def test_a_text_past_the_tokenizers_limit_is_still_counted() -> None:
    from routing.tokens import count_text

    word = "lorem ipsum dolor sit amet "
    text = word * 60_000  # ~1.6M characters, far past one encode call's limit
    per_word = (count_text(word * 2000) - count_text(word * 1000)) / 1000  # without edge effects
    assert abs(count_text(text) - per_word * 60_000) <= 20
