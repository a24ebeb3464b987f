"""Cost estimation before a call and settlement after it, in Decimal USD.

Settlement uses the usage the provider reported and the catalog's prices; cached input
tokens are billed at the model's cached price where it has one. A line answered by a
provider batch is settled at the model's batch prices instead (`settle_batch_cost`). Money
is quantized to 1e-8 USD once, at the end, so sums over millions of jobs do not drift.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from core.types import Usage
from routing.catalog import ModelSpec

MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.00000001")


class NoBatchPrices(ValueError):
    """The model has no batch prices in the catalog, so it cannot go by provider batch."""


def _priced(
    usage: Usage, input_price: Decimal, cached_price: Decimal | None, output_price: Decimal
) -> Decimal:
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cost = (
        Decimal(usage.input_tokens - cached) * input_price
        + Decimal(cached) * (cached_price if cached_price is not None else input_price)
        + Decimal(usage.output_tokens) * output_price
    ) / MILLION
    return cost.quantize(QUANTUM, rounding=ROUND_HALF_UP)


def settle_cost(model: ModelSpec, usage: Usage) -> Decimal:
    """What a call with this usage cost, at the catalog's prices."""
    return _priced(usage, model.input_price, model.cached_input_price, model.output_price)


def settle_batch_cost(model: ModelSpec, usage: Usage) -> Decimal:
    """What a line a provider batch answered with this usage cost, at the model's batch prices."""
    if model.batch_input_price is None or model.batch_output_price is None:
        raise NoBatchPrices(
            f"model {model.id!r} has no batch prices (batch_input_price, batch_output_price) in the catalog"
        )
    return _priced(usage, model.batch_input_price, model.batch_cached_input_price, model.batch_output_price)


def estimate_cost(model: ModelSpec, input_tokens: int, expected_output_tokens: int) -> Decimal:
    """What a call is expected to cost before it is made (no cache discount assumed)."""
    return settle_cost(model, Usage(input_tokens=input_tokens, output_tokens=expected_output_tokens))


def estimate_batch_cost(model: ModelSpec, input_tokens: int, expected_output_tokens: int) -> Decimal:
    """What a line of a provider batch is expected to cost (NoBatchPrices when it cannot go)."""
    return settle_batch_cost(model, Usage(input_tokens=input_tokens, output_tokens=expected_output_tokens))


def expected_output_tokens(model: ModelSpec, max_tokens: int | None, input_tokens: int) -> int:
    """Output to expect: max_tokens when set (the worst case a ceiling must allow), else a
    quarter of the input bounded to [64, 1024], a typical answer length."""
    if max_tokens is not None:
        return min(max_tokens, model.max_output_tokens)
    return min(model.max_output_tokens, max(64, min(1024, input_tokens // 4)))


MIN_OUTPUT_TOKENS = 16  # a call a budget can only afford less output than this is not made


# Our input count is exact for OpenAI's models only; other providers count with tokenizers of
# their own (and an emulator or a proxy may count another way again). A reservation must hold
# whatever the provider bills, so it counts the input with this margin; the settlement charges
# the real usage and releases the rest.
RESERVE_INPUT_FACTOR = Decimal("1.5")
RESERVE_INPUT_SLACK = 8


def reservable_input(input_tokens: int) -> int:
    """The input tokens a reservation holds for: our count with the margin above."""
    scaled = (Decimal(input_tokens) * RESERVE_INPUT_FACTOR).to_integral_value(rounding=ROUND_CEILING)
    return int(scaled) + RESERVE_INPUT_SLACK


def affordable_output(model: ModelSpec, input_tokens: int, headroom_usd: Decimal) -> int:
    """The most output tokens a call may produce within `headroom_usd`, up to the model's cap:
    the output bound a key with a budget always calls with, so its reservation is a true upper
    bound. 0 when even the input does not fit."""
    input_cost = estimate_cost(model, input_tokens, 0)
    left = headroom_usd - input_cost
    if left < 0:
        return 0
    if model.output_price == 0:
        return model.max_output_tokens
    per_token = model.output_price / MILLION
    affordable = (left / per_token).to_integral_value(rounding=ROUND_FLOOR)
    return int(min(Decimal(model.max_output_tokens), affordable))


def max_cost(model: ModelSpec, input_tokens: int, output_tokens: int) -> Decimal:
    """The most a call can cost: all its input, and every output token it may produce, at list
    price (a cache discount only lowers it). Rounded up, so a reservation never falls short."""
    cost = (Decimal(input_tokens) * model.input_price + Decimal(output_tokens) * model.output_price) / MILLION
    return cost.quantize(QUANTUM, rounding=ROUND_CEILING)


def max_batch_cost(model: ModelSpec, input_tokens: int, output_tokens: int) -> Decimal:
    """`max_cost` for a line of a provider batch: every token at the model's batch prices
    (NoBatchPrices when it has none). What a line reserves against a budget."""
    if model.batch_input_price is None or model.batch_output_price is None:
        raise NoBatchPrices(
            f"model {model.id!r} has no batch prices (batch_input_price, batch_output_price) in the catalog"
        )
    cost = (
        Decimal(input_tokens) * model.batch_input_price + Decimal(output_tokens) * model.batch_output_price
    ) / MILLION
    return cost.quantize(QUANTUM, rounding=ROUND_CEILING)
