"""The catalog: the shipped default is valid, and every malformed catalog is an error at
start that names the file and the field, never a silent default; chat and embedding models
each declare their own fields."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from routing.catalog import CatalogError, ModelKind, catalog_from_dict, load_catalog

MODEL: dict[str, Any] = {
    "id": "m1",
    "provider": "openai",
    "context_window": 1000,
    "max_output_tokens": 100,
    "input_price": "1.00",
    "output_price": "2.00",
    "quality": 50,
}
DEPLOYMENT: dict[str, Any] = {"name": "d1", "model": "m1"}


def build(models: list[dict[str, Any]] | None = None, deployments: list[dict[str, Any]] | None = None) -> Any:
    return catalog_from_dict(
        {"models": models or [MODEL], "deployments": deployments or [DEPLOYMENT]}, "t.toml"
    )


def test_the_default_catalog_has_every_provider_priced() -> None:
    catalog = load_catalog()
    assert {m.provider for m in catalog.models.values()} >= {
        "openai",
        "azure",
        "anthropic",
        "gemini",
        "cohere",
        "mistral",
        "bedrock",
        "ollama",
    }
    mini = catalog.model("gpt-4o-mini")
    assert mini is not None and mini.input_price == Decimal("0.15") and mini.output_price == Decimal("0.60")
    for dep in catalog.deployments.values():
        assert dep.model.id in catalog.models


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"input_price": None}, "input_price"),
        ({"output_price": "-1"}, "output_price"),
        ({"provider": "openia"}, "unknown provider"),
        ({"capabilities": ["telepathy"]}, "telepathy"),
        ({"context_window": 0}, "context_window"),
        ({"price": "1"}, "price"),
    ],
)
def test_a_bad_model_names_the_file_and_field(change: dict[str, Any], words: str) -> None:
    model = {k: v for k, v in {**MODEL, **change}.items() if v is not None}
    with pytest.raises(CatalogError) as info:
        build([model])
    assert "t.toml" in str(info.value) and "models[0]" in str(info.value)
    assert words in str(info.value)


def test_deployment_of_an_unknown_model() -> None:
    with pytest.raises(CatalogError, match=r"deployments\[0\] \(d1\): unknown model 'nope'"):
        build(deployments=[{"name": "d1", "model": "nope"}])


def test_duplicates_and_orphans() -> None:
    with pytest.raises(CatalogError, match="duplicate model id"):
        build([MODEL, MODEL])
    with pytest.raises(CatalogError, match="duplicate deployment name"):
        build(deployments=[DEPLOYMENT, DEPLOYMENT])
    with pytest.raises(CatalogError, match="models with no deployment"):
        build([MODEL, {**MODEL, "id": "m2"}])


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]\nid = ")
    with pytest.raises(CatalogError, match="not valid TOML"):
        load_catalog(bad)


def test_the_api_refuses_to_start_on_a_bad_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.main import create_app
    from routing import catalog as catalog_module

    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nid = "x"\nprovider = "openai"\n')
    monkeypatch.setenv("LLMQUEUE_CATALOG", str(bad))
    catalog_module._cached.cache_clear()
    try:
        with pytest.raises(CatalogError, match=r"bad\.toml"):
            create_app()
    finally:
        monkeypatch.delenv("LLMQUEUE_CATALOG")
        catalog_module._cached.cache_clear()


# --- embedding models ---------------------------------------------------------------------------

EMBEDDING: dict[str, Any] = {
    "id": "e1",
    "provider": "openai",
    "kind": "embedding",
    "dimensions": 1536,
    "dimension_options": "any",
    "max_input_tokens": 8191,
    "max_inputs_per_call": 2048,
    "max_tokens_per_call": 300000,
    "input_price": "0.02",
    "quality": 62,
}


def test_an_embedding_model_gets_its_derived_fields() -> None:
    catalog = build([MODEL, EMBEDDING], [DEPLOYMENT, {"name": "e", "model": "e1"}])
    model = catalog.model("e1")
    assert model is not None and model.kind is ModelKind.EMBEDDING
    assert (model.context_window, model.max_output_tokens, model.output_price) == (8191, 0, Decimal(0))
    assert model.capabilities == frozenset() and model.max_inputs_per_call == 2048
    chat = catalog.model("m1")
    assert chat is not None and chat.kind is ModelKind.CHAT and chat.dimensions is None
    assert [d.name for d in catalog.deployments_of_kind(ModelKind.EMBEDDING)] == ["e"]
    assert [d.name for d in catalog.deployments_of_kind(ModelKind.CHAT)] == ["d1"]


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ({**EMBEDDING, "dimensions": None}, "dimensions: required for an embedding model"),
        ({**EMBEDDING, "max_input_tokens": None}, "max_input_tokens: required for an embedding model"),
        ({**EMBEDDING, "max_inputs_per_call": None}, "max_inputs_per_call: required for an embedding model"),
        ({**EMBEDDING, "input_price": None}, "input_price: required for an embedding model"),
        (
            {**EMBEDDING, "output_price": "0.5"},
            "output_price: an embedding model is billed for its input only",
        ),
        ({**EMBEDDING, "context_window": 8191}, "context_window: a chat model's field"),
        ({**EMBEDDING, "capabilities": ["tools"]}, "capabilities: a chat model's field"),
        ({**EMBEDDING, "max_inputs_per_call": 0}, "max_inputs_per_call"),
        (
            {**EMBEDDING, "dimension_options": [256, 4096]},
            "dimension_options: 4096 is not between 1 and 1536",
        ),
        ({**EMBEDDING, "kind": "rerank"}, "kind"),
        ({**MODEL, "dimensions": 1536}, "dimensions: an embedding model's field; this is a chat model"),
        ({**MODEL, "max_inputs_per_call": 96}, "max_inputs_per_call: an embedding model's field"),
        ({**MODEL, "max_output_tokens": 0}, "max_output_tokens: must be greater than 0"),
    ],
)
def test_each_kind_declares_its_own_fields(model: dict[str, Any], words: str) -> None:
    model = {k: v for k, v in model.items() if v is not None}
    with pytest.raises(CatalogError) as info:
        build([model], [{"name": "d", "model": model["id"]}])
    message = str(info.value)
    assert message.startswith(f"t.toml: models[0] ({model['id']}): ") and words in message
    assert "Value error" not in message


def test_dimension_options() -> None:
    catalog = build(
        [
            EMBEDDING,
            {**EMBEDDING, "id": "listed", "dimension_options": [256, 512]},
            {**EMBEDDING, "id": "fixed", "dimension_options": []},
        ],
        [{"name": n, "model": n} for n in ("e1", "listed", "fixed")],
    )
    anylen, listed, fixed = (catalog.models[n] for n in ("e1", "listed", "fixed"))
    assert anylen.supports_dimensions(1) and anylen.supports_dimensions(1536)
    assert not anylen.supports_dimensions(1537) and not anylen.supports_dimensions(0)
    assert listed.supports_dimensions(256) and listed.supports_dimensions(1536)
    assert not listed.supports_dimensions(300)
    assert fixed.supports_dimensions(1536) and not fixed.supports_dimensions(512)
    assert (
        not catalog_from_dict({"models": [MODEL], "deployments": [DEPLOYMENT]})
        .models["m1"]
        .supports_dimensions(8)
    )


def test_the_default_catalog_has_embedding_models_for_every_provider_with_an_api() -> None:
    catalog = load_catalog()
    embedding = [m for m in catalog.models.values() if m.kind is ModelKind.EMBEDDING]
    assert {m.provider for m in embedding} == {
        "openai",
        "azure",
        "cohere",
        "mistral",
        "gemini",
        "bedrock",
        "ollama",
    }
    small = catalog.model("text-embedding-3-small")
    assert small is not None and small.input_price == Decimal("0.02") and small.max_inputs_per_call == 2048
    for model in embedding:
        assert model.dimensions and model.max_input_tokens and model.max_inputs_per_call
        assert model.output_price == 0 and catalog.deployments_of(model.id)
    # a model with two deployments, for same-model failover
    assert len(catalog.deployments_of("amazon.titan-embed-text-v2:0")) == 2
