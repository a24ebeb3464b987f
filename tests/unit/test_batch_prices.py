"""Provider batches in the catalog, the costs and the table of batch APIs: batch prices are
validated and settled, the shipped prices are about half the online ones, and every provider
with a batch API has a client that loads."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from core.provider_batches import PROVIDER_BATCHES, provider_batch_spec
from core.providers import ProviderName
from core.types import Usage
from routing.catalog import CatalogError, ModelKind, catalog_from_dict, load_catalog
from routing.costs import NoBatchPrices, estimate_batch_cost, settle_batch_cost, settle_cost
from workers.providers.batch_base import NoProviderBatch, batch_client_class

MODEL: dict[str, Any] = {
    "id": "m1",
    "provider": "openai",
    "context_window": 1000,
    "max_output_tokens": 100,
    "input_price": "2.00",
    "output_price": "8.00",
    "cached_input_price": "0.50",
    "quality": 50,
}


def model(**changes: Any) -> Any:
    catalog = catalog_from_dict(
        {"models": [{**MODEL, **changes}], "deployments": [{"name": "d", "model": "m1"}]}
    )
    return catalog.models["m1"]


def test_a_line_is_settled_at_the_batch_prices() -> None:
    m = model(batch_input_price="1.00", batch_output_price="4.00", batch_cached_input_price="0.25")
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=200_000, output_tokens=500_000)
    assert settle_batch_cost(m, usage) == Decimal("0.80") + Decimal("0.05") + Decimal("2.00")
    assert settle_cost(m, usage) == Decimal("1.60") + Decimal("0.10") + Decimal("4.00")
    no_cached_price = model(batch_input_price="1.00", batch_output_price="4.00")
    assert settle_batch_cost(no_cached_price, usage) == Decimal("1.00") + Decimal("2.00")
    assert estimate_batch_cost(m, 2000, 1000) == Decimal("0.006")


def test_a_model_without_batch_prices_cannot_be_settled_as_a_batch_line() -> None:
    with pytest.raises(NoBatchPrices, match="m1"):
        settle_batch_cost(model(), Usage(input_tokens=1, output_tokens=1))
    assert not model().has_batch_prices


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"batch_input_price": "1"}, "batch_output_price"),
        ({"batch_output_price": "1"}, "batch_input_price"),
        ({"batch_cached_input_price": "1"}, "batch_cached_input_price needs"),
        ({"batch_input_price": "-1", "batch_output_price": "1"}, "batch_input_price"),
    ],
)
def test_malformed_batch_prices_stop_the_start(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(CatalogError) as info:
        model(**changes)
    assert words in str(info.value) and "m1" in str(info.value)


def test_the_shipped_batch_prices_are_about_half_the_online_ones() -> None:
    catalog = load_catalog()
    priced = {m.id: m for m in catalog.models.values() if m.has_batch_prices}
    batch_providers = {spec.provider.value for spec in PROVIDER_BATCHES.values()}
    # Every chat model of a provider with a batch client can go by provider batch (embedding
    # models go online: their provider batches are not built yet).
    chat = [m for m in catalog.models.values() if m.kind is ModelKind.CHAT]
    assert {m.id for m in chat if m.provider in batch_providers} <= set(priced)
    for m in priced.values():
        assert m.batch_input_price is not None and m.batch_output_price is not None
        # Azure's batch is half of its Global Standard price, under the regional one listed.
        assert Decimal("0.45") <= m.batch_input_price / m.input_price <= Decimal("0.5"), m.id
        assert Decimal("0.45") <= m.batch_output_price / m.output_price <= Decimal("0.5"), m.id
        usage = Usage(input_tokens=3000, output_tokens=400)
        assert settle_batch_cost(m, usage) <= Decimal("0.52") * settle_cost(m, usage), m.id
    haiku = priced["claude-haiku-4-5"]
    assert (haiku.batch_input_price, haiku.batch_output_price, haiku.batch_cached_input_price) == (
        Decimal("0.50"),
        Decimal("2.50"),
        Decimal("0.05"),
    )


def test_a_batch_names_the_deployments_batch_model() -> None:
    catalog = load_catalog()
    azure = catalog.deployments["azure/gpt-4o-mini"]
    assert (azure.provider_model, azure.batch_provider_model) == ("gpt-4o-mini", "gpt-4o-mini-batch")
    assert catalog.deployments["openai/gpt-4o-mini"].batch_provider_model == "gpt-4o-mini"
    with pytest.raises(CatalogError, match="batch_enqueued_tokens"):
        catalog_from_dict(
            {"models": [MODEL], "deployments": [{"name": "d", "model": "m1", "batch_enqueued_tokens": 0}]}
        )


@pytest.mark.parametrize("provider", sorted(PROVIDER_BATCHES))
def test_every_batch_api_in_the_table_has_a_client_that_loads(provider: ProviderName) -> None:
    cls = batch_client_class(provider)
    for method in ("encode_line", "submit", "poll", "results", "cancel", "aclose"):
        assert callable(getattr(cls, method, None)), f"{cls.__name__} lacks {method}"
    spec = provider_batch_spec(provider)
    assert spec is not None and spec.limits.window_s == 24 * 3600 and spec.limits.max_bytes > 0


@pytest.mark.parametrize("provider", ["bedrock", "cohere", "ollama", "nonsense"])
def test_a_provider_without_a_batch_api_has_no_client(provider: str) -> None:
    assert provider_batch_spec(provider) is None
    with pytest.raises(NoProviderBatch, match=r"core/provider_batches\.py"):
        batch_client_class(provider)
