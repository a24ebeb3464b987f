"""Ollama and other OpenAI-compatible chat endpoints (vLLM, LM Studio, llama.cpp, gateways).

They speak OpenAI's `/v1/chat/completions` and `/v1/embeddings`, so both adapters are
`OpenAIProvider` with a different client: the deployment's `base_url` (Ollama's defaults to the
local server), and a placeholder key when the endpoint needs none, since the SDK refuses to
build without one. Vectors are asked for as floats, which every compatible server sends (not
all speak base64). Translation, streaming and error mapping are all `openai.py`'s.
"""

from __future__ import annotations

import openai

from workers.providers.base import Target
from workers.providers.openai import OpenAIProvider

OLLAMA_DEFAULT_URL = "http://localhost:11434/v1"
NO_KEY = "no-key-needed"


def compatible_client(target: Target, base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=target.api_key or NO_KEY,
        base_url=base_url,
        max_retries=0,
        timeout=target.timeout_s,
        http_client=openai.DefaultAioHttpClient(timeout=target.timeout_s),
    )


class OllamaProvider(OpenAIProvider):
    """A local (or remote) Ollama server's OpenAI-compatible API."""

    embedding_encoding = "float"

    def build_client(self, target: Target) -> openai.AsyncOpenAI:
        return compatible_client(target, target.base_url or OLLAMA_DEFAULT_URL)


class CompatibleProvider(OpenAIProvider):
    """Any endpoint speaking OpenAI's chat completions; the deployment must give `base_url`."""

    embedding_encoding = "float"

    def build_client(self, target: Target) -> openai.AsyncOpenAI:
        if not target.base_url:
            raise ValueError(
                f"deployment {target.deployment.name!r} needs base_url: the endpoint's OpenAI-compatible "
                "root, e.g. http://localhost:8000/v1"
            )
        return compatible_client(target, target.base_url)
