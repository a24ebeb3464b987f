"""The official SDKs' clients aimed at the emulator, and small helpers the emulator tests share.

Each client is built as the provider adapters build theirs (tests/providers): a dummy key, the
emulator's path for that wire format as base URL, and no SDK retries, so every call the test makes
is exactly one HTTP request the emulator sees.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import anthropic
import boto3
import cohere
import openai
from botocore.config import Config
from google import genai
from google.genai import types
from mistralai.client import Mistral
from mistralai.client.utils.retries import BackoffStrategy, RetryConfig

KEY = "emulator"


def openai_client(url: str, path: str = "/openai/v1") -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=url + path, max_retries=0)


def async_openai_client(url: str, path: str = "/openai/v1") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEY, base_url=url + path, max_retries=0)


def azure_client(url: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key=KEY, azure_endpoint=url + "/azure", api_version="2024-10-21", max_retries=0
    )


def anthropic_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=url + "/anthropic", max_retries=0)


def cohere_client(url: str) -> cohere.ClientV2:
    return cohere.ClientV2(
        api_key=KEY, base_url=url + "/cohere", max_retries=0, log_warning_experimental_features=False
    )


def mistral_client(url: str) -> Mistral:
    no_retries = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), retry_connection_errors=False)
    return Mistral(api_key=KEY, server_url=url + "/mistral", retry_config=no_retries)


def gemini_client(url: str) -> genai.Client:
    options = types.HttpOptions(
        base_url=url + "/gemini", api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)
    )
    return genai.Client(api_key=KEY, vertexai=False, http_options=options)


def bedrock_client(url: str) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="emulator", aws_secret_access_key="emulator", region_name="us-east-1"
    )
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return session.client("bedrock-runtime", endpoint_url=url + "/bedrock", config=config)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


# Texts for the retrieval checks: QUERY shares words with NEAR and none with FAR.
QUERY = "How do I reset my account password?"
NEAR = "To reset your account password, open the login page and choose 'forgot password'."
FAR = "Quarterly revenue grew eleven percent on strong hardware shipments."


def retrieval_holds(query: Sequence[float], near: Sequence[float], far: Sequence[float]) -> bool:
    return cosine(query, near) > cosine(query, far) + 0.2


_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration as OpenAI writes x-ratelimit-reset-* (`20ms`, `1.5s`, `6m0s`)."""
    parts = _GO_PART.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a Go duration: {text!r}"
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)
