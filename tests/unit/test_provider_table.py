"""The provider table (core/providers.py) is the one place a provider is declared: every entry
has an adapter that loads, and a provider the table lacks stops a start, named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.providers import PROVIDERS, UnknownProvider, provider_spec
from routing.catalog import CatalogError, catalog_from_dict
from workers.providers import AdapterMissing, adapter_class

ACME_CATALOG = """
[[models]]
id = "acme-1"
provider = "acme"
context_window = 8000
max_output_tokens = 1000
input_price = "1"
output_price = "2"
quality = 50

[[deployments]]
name = "acme/acme-1"
model = "acme-1"
"""


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_every_provider_in_the_table_has_an_adapter_with_a_call(name: str) -> None:
    cls = adapter_class(name)
    assert callable(getattr(cls, "complete", None))
    assert callable(getattr(cls, "aclose", None))


def test_a_provider_missing_from_the_table_is_named() -> None:
    with pytest.raises(UnknownProvider, match=r"'acme'.*core/providers.py"):
        provider_spec("acme")
    with pytest.raises(CatalogError, match="acme"):
        catalog_from_dict(
            {
                "models": [
                    {
                        "id": "m",
                        "provider": "acme",
                        "context_window": 10,
                        "max_output_tokens": 5,
                        "input_price": "0",
                        "output_price": "0",
                        "quality": 1,
                    }
                ],
                "deployments": [{"name": "d", "model": "m"}],
            }
        )


def test_an_adapter_that_cannot_load_names_its_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from core import providers

    broken = replace(providers.PROVIDERS[providers.ProviderName.OPENAI], adapter="workers.providers.gone:X")
    monkeypatch.setitem(providers.PROVIDERS, providers.ProviderName.OPENAI, broken)
    with pytest.raises(AdapterMissing, match=r"'openai'.*workers\.providers\.gone"):
        adapter_class("openai")


def test_a_worker_start_with_a_provider_missing_from_the_table_fails_with_its_name(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(ACME_CATALOG)
    env = {**os.environ, "LLMQUEUE_CATALOG": str(catalog), "COLUMNS": "400"}
    result = subprocess.run(
        [sys.executable, "-m", "llmqueue.cli", "worker", "-Q", "dispatch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "'acme'" in result.stderr and "core/providers.py" in result.stderr
