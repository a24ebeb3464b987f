"""The one table of providers: a new provider is one adapter module plus one entry here.

Each entry says what every layer needs to know of a provider: where its adapter lives
(`workers/providers/<module>.py`, loaded by the provider workers), the environment variable
its key conventionally lives in (and accepted alternates), how its tokenizer compares with
o200k (routing's token estimates), and where the built-in emulator speaks its wire format.
Queue names (`provider.<name>`), the catalog's validation and the compose file's worker
services all follow from this table; a catalog naming a provider missing here stops the
start with its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ProviderName(StrEnum):
    OPENAI = "openai"
    AZURE = "azure"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    COHERE = "cohere"
    MISTRAL = "mistral"
    BEDROCK = "bedrock"
    OLLAMA = "ollama"
    COMPATIBLE = "compatible"


class Endpoint(StrEnum):
    """Where a provider's calls go when its deployment names no `base_url`."""

    SDK_DEFAULT = "sdk_default"  # the provider's own API, which its SDK knows
    REQUIRED = "required"  # a resource of the user's own (Azure) or any server: base_url or endpoint_env
    LOCAL = "local"  # a server the user runs (Ollama): used only once endpoint_env says where


@dataclass(frozen=True)
class ProviderSpec:
    name: ProviderName
    # "module:Class" of the adapter; imported only by the workers that serve this provider,
    # so a worker never imports (or needs) the other providers' SDKs.
    adapter: str
    key_env: str | None  # None: no key (a local server)
    key_env_fallbacks: tuple[str, ...]  # read, in order, when key_env is unset
    # Tokens per o200k token, measured on English prose (>1: that tokenizer is less dense).
    token_calibration: float
    emulator_path: str  # where the built-in emulator serves this provider's wire format
    endpoint: Endpoint = Endpoint.SDK_DEFAULT
    # The variable that gives the endpoint when the deployment's base_url is unset (or a
    # placeholder such as the default catalog's example Azure resource).
    endpoint_env: str | None = None


PROVIDERS: dict[ProviderName, ProviderSpec] = {
    spec.name: spec
    for spec in (
        ProviderSpec(
            name=ProviderName.OPENAI,
            adapter="workers.providers.openai:OpenAIProvider",
            key_env="OPENAI_API_KEY",
            key_env_fallbacks=(),
            token_calibration=1.0,
            emulator_path="/openai/v1",
        ),
        ProviderSpec(
            name=ProviderName.AZURE,
            adapter="workers.providers.azure:AzureOpenAIProvider",
            key_env="AZURE_OPENAI_API_KEY",
            key_env_fallbacks=(),
            token_calibration=1.0,
            emulator_path="/azure",
            endpoint=Endpoint.REQUIRED,
            endpoint_env="AZURE_OPENAI_ENDPOINT",
        ),
        # Anthropic: the SDK appends /v1/messages.
        ProviderSpec(
            name=ProviderName.ANTHROPIC,
            adapter="workers.providers.anthropic:AnthropicProvider",
            key_env="ANTHROPIC_API_KEY",
            key_env_fallbacks=(),
            token_calibration=1.20,
            emulator_path="/anthropic",
        ),
        ProviderSpec(
            name=ProviderName.GEMINI,
            adapter="workers.providers.gemini:GeminiProvider",
            key_env="GEMINI_API_KEY",
            key_env_fallbacks=("GOOGLE_API_KEY",),
            token_calibration=1.05,
            emulator_path="/gemini",
        ),
        # Cohere: the SDK appends /v2/chat.
        ProviderSpec(
            name=ProviderName.COHERE,
            adapter="workers.providers.cohere:CohereProvider",
            key_env="CO_API_KEY",
            key_env_fallbacks=(),
            token_calibration=1.10,
            emulator_path="/cohere",
        ),
        # Mistral: the SDK appends /v1/chat/completions.
        ProviderSpec(
            name=ProviderName.MISTRAL,
            adapter="workers.providers.mistral:MistralProvider",
            key_env="MISTRAL_API_KEY",
            key_env_fallbacks=(),
            token_calibration=1.15,
            emulator_path="/mistral",
        ),
        # Bedrock: the key is the AWS credential chain; AWS_ACCESS_KEY_ID is its first link.
        ProviderSpec(
            name=ProviderName.BEDROCK,
            adapter="workers.providers.bedrock:BedrockProvider",
            key_env="AWS_ACCESS_KEY_ID",
            key_env_fallbacks=(),
            token_calibration=1.15,
            emulator_path="/bedrock",
        ),
        # Ollama: a local server: no key.
        ProviderSpec(
            name=ProviderName.OLLAMA,
            adapter="workers.providers.ollama:OllamaProvider",
            key_env=None,
            key_env_fallbacks=(),
            token_calibration=1.10,
            emulator_path="/ollama/v1",
            endpoint=Endpoint.LOCAL,
            endpoint_env="OLLAMA_HOST",
        ),
        # Compatible: any OpenAI-compatible endpoint (vLLM, LM Studio, gateways).
        ProviderSpec(
            name=ProviderName.COMPATIBLE,
            adapter="workers.providers.ollama:CompatibleProvider",
            key_env=None,
            key_env_fallbacks=(),
            token_calibration=1.10,
            emulator_path="/compatible/v1",
            endpoint=Endpoint.REQUIRED,
        ),
    )
}


class UnknownProvider(ValueError):
    """A provider name missing from `PROVIDERS`; the message names it and the table."""


def provider_spec(name: str) -> ProviderSpec:
    try:
        return PROVIDERS[ProviderName(name)]
    except ValueError:
        known = ", ".join(PROVIDERS)
        raise UnknownProvider(
            f"unknown provider {name!r}: add it to core/providers.py PROVIDERS (known: {known})"
        ) from None
