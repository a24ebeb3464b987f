"""Cost estimation before a call and settlement after it, in Decimal USD.

Settlement uses the usage the provider reported and the catalog's prices; cached input
tokens are billed at the model's cached price where it has one. Money is quantized to
1e-8 USD once, at the end, so sums over millions of jobs do not drift.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from core.types import Usage
from routing.catalog import ModelSpec

MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.00000001")


def settle_cost(model: ModelSpec, usage: Usage) -> Decimal:
    """What a call with this usage cost, at the catalog's prices."""
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_price = model.cached_input_price if model.cached_input_price is not None else model.input_price
    cost = (
        Decimal(usage.input_tokens - cached) * model.input_price
        + Decimal(cached) * cached_price
        + Decimal(usage.output_tokens) * model.output_price
    ) / MILLION
    return cost.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def estimate_cost(model: ModelSpec, input_tokens: int, expected_output_tokens: int) -> Decimal:
    """What a call is expected to cost before it is made (no cache discount assumed)."""
    return settle_cost(model, Usage(input_tokens=input_tokens, output_tokens=expected_output_tokens))


def expected_output_tokens(model: ModelSpec, max_tokens: int | None, input_tokens: int) -> int:
    """Output to expect: max_tokens when set (the worst case a ceiling must allow), else a
    quarter of the input bounded to [64, 1024], a typical answer length."""
    if max_tokens is not None:
        return min(max_tokens, model.max_output_tokens)
    return min(model.max_output_tokens, max(64, min(1024, input_tokens // 4)))
