"""Provider adapters, one module each, found through the provider table (`core/providers.py`).

A provider's module is imported on first use, so a worker serving one provider never imports
(or needs) the other providers' SDKs; a provider whose adapter cannot be imported fails loudly
with its name (`load_adapters` at a worker's start).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

from core.providers import provider_spec
from workers.providers.base import Provider


class AdapterMissing(ImportError):
    """The provider table names an adapter that cannot be imported."""


def adapter_class(provider: str) -> type[Provider]:
    """The adapter class of a provider in the table; UnknownProvider or AdapterMissing name it."""
    spec = provider_spec(provider)
    module_name, _, class_name = spec.adapter.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls: type[Provider] = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise AdapterMissing(
            f"provider {spec.name.value!r}: its adapter {spec.adapter!r} (core/providers.py) cannot be "
            f"loaded: {exc}"
        ) from exc
    return cls


def load_adapters(providers: Iterable[str]) -> dict[str, type[Provider]]:
    """Every named provider's adapter, imported now (a worker's start): a missing one stops it."""
    return {provider: adapter_class(provider) for provider in providers}
