"""Azure OpenAI chat completions and embeddings through the `openai` SDK's `AsyncAzureOpenAI`
client.

Owns only how the client is built: the resource endpoint (`base_url` of the deployment, or
the emulator's `/azure`), the `api-version` the deployment pins, and the `api-key` header.
The Azure deployment name is the catalog deployment's `provider_model`, sent as the request's
`model`, which the SDK moves into the `/openai/deployments/{name}/...` path. Translation,
streaming and error mapping are OpenAI's, from `openai.py`; Azure's content-filter and
context-length errors use the same error codes.
"""

from __future__ import annotations

import openai

from workers.providers.base import Target
from workers.providers.openai import OpenAIProvider

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIProvider(OpenAIProvider):
    """An Azure OpenAI resource's deployment."""

    def build_client(self, target: Target) -> openai.AsyncOpenAI:
        if not target.base_url:
            raise ValueError(
                f"deployment {target.deployment.name!r} needs base_url: the Azure resource endpoint, "
                "e.g. https://my-resource.openai.azure.com"
            )
        return openai.AsyncAzureOpenAI(
            azure_endpoint=target.base_url,
            api_key=target.api_key,
            api_version=target.deployment.spec.api_version or DEFAULT_API_VERSION,
            max_retries=0,
            timeout=target.timeout_s,
            http_client=openai.DefaultAioHttpClient(timeout=target.timeout_s),
        )
