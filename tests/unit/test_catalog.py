"""The catalog: the shipped default is valid, and every malformed catalog is an error at
start that names the file and the field, never a silent default."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from routing.catalog import CatalogError, catalog_from_dict, load_catalog

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
