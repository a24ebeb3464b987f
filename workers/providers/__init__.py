"""Provider adapters, one module each, found by provider name.

Modules are imported on first use, so a worker serving one provider never imports (or
needs) the other providers' SDKs.
"""

from __future__ import annotations

import importlib

from workers.providers.base import Provider

# provider name -> "module:Class"
ADAPTERS: dict[str, str] = {
    "openai": "workers.providers.openai:OpenAIProvider",
    "azure": "workers.providers.azure:AzureOpenAIProvider",
    "ollama": "workers.providers.ollama:OllamaProvider",
    "compatible": "workers.providers.ollama:CompatibleProvider",
    "anthropic": "workers.providers.anthropic:AnthropicProvider",
    "gemini": "workers.providers.gemini:GeminiProvider",
    "cohere": "workers.providers.cohere:CohereProvider",
    "mistral": "workers.providers.mistral:MistralProvider",
    "bedrock": "workers.providers.bedrock:BedrockProvider",
}


def adapter_class(provider: str) -> type[Provider]:
    """The adapter class for a provider name; KeyError names the known ones."""
    try:
        path = ADAPTERS[provider]
    except KeyError:
        raise KeyError(
            f"no adapter for provider {provider!r}; known: {', '.join(sorted(ADAPTERS))}"
        ) from None
    module_name, _, class_name = path.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls
