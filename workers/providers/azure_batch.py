"""Azure OpenAI's global batch through the `openai` SDK's `AsyncAzureOpenAI` client.

Everything is OpenAI's Batch API (`openai_batch.py`) but two things: the client is the Azure
adapter's (the resource endpoint, the deployment's `api-version`, the `api-key` header), and
the batch and its lines name the endpoint `/chat/completions`, as Azure documents it. Each
line's `model` is the deployment's `batch_provider_model`: the name of a deployment of type
Global Batch, which is not the online (Standard) deployment. Azure never expires a batch on
its own; llmqueue's window is enforced by cancelling it.
"""

from __future__ import annotations

from typing import ClassVar

from core.providers import ProviderName
from workers.providers.azure import AzureOpenAIProvider
from workers.providers.openai import OpenAIProvider
from workers.providers.openai_batch import OpenAIBatchClient


class AzureBatchClient(OpenAIBatchClient):
    """An Azure OpenAI resource's global batch deployment."""

    provider: ClassVar[ProviderName] = ProviderName.AZURE
    adapter_class: ClassVar[type[OpenAIProvider]] = AzureOpenAIProvider
    endpoint: ClassVar[str] = "/chat/completions"
