"""Calls that get no HTTP answer, through every adapter's real SDK: a refused connection, an
unresolvable host, a TLS handshake with a plain-HTTP port and a timeout each say what they
are (`workers/providers/errors.py: transport_error`), and an HTTP answer whose class name
says "timeout" (a 504) stays an HTTP error."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import EmulatorHandle
from tests.providers.support import REFUSED_URL, complete_fresh, emulated, req
from workers.providers import adapter_class, errors

# One deployment per adapter (Ollama's is OpenAI's client with another base URL).
DEPLOYMENTS = {
    "openai": "openai/gpt-4o-mini",
    "azure": "azure/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "gemini": "gemini/gemini-2.5-flash",
    "cohere": "cohere/command-a",
    "mistral": "mistral/mistral-large",
    "bedrock": "bedrock/nova-lite",
}
PROVIDERS = sorted(DEPLOYMENTS)
UNRESOLVABLE_URL = "http://no-such-host.invalid"  # .invalid never resolves (RFC 2606)


def call(provider: str, url: str, timeout_s: float = 5.0) -> errors.Transient:
    """One call to `url` through `provider`'s adapter; it must fail as a transport failure."""
    make = lambda: emulated(adapter_class(provider), DEPLOYMENTS[provider], url, timeout_s)  # noqa: E731
    with pytest.raises(errors.Transient) as info:
        complete_fresh(make, req())
    assert info.value.status_code is None
    return info.value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_connection_refused_says_refused(provider: str) -> None:
    started = time.monotonic()
    error = call(provider, REFUSED_URL)
    assert error.transport is errors.TransportFailure.CONNECTION_REFUSED
    assert "connection refused by 127.0.0.1:9" in error.message
    assert "timed out" not in error.message
    assert time.monotonic() - started < 4  # refused at once, not waited out


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unresolvable_host_says_dns(provider: str) -> None:
    error = call(provider, UNRESOLVABLE_URL)
    assert error.transport is errors.TransportFailure.DNS
    assert error.message.startswith("DNS lookup failed for no-such-host.invalid")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_https_to_a_plain_http_port_says_tls(provider: str, emulator: EmulatorHandle) -> None:
    address = urlsplit(emulator.url).netloc
    error = call(provider, f"https://{address}")
    assert error.transport is errors.TransportFailure.TLS
    assert error.message.startswith(f"TLS handshake with {address} failed (is it plain HTTP?)")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_slow_answer_says_timed_out(provider: str, emulator: EmulatorHandle) -> None:
    emulator.configure({"*": {"latency_ms": 2000}})
    address = urlsplit(emulator.url).netloc
    error = call(provider, emulator.url, timeout_s=0.3)
    assert error.transport is errors.TransportFailure.TIMEOUT
    assert error.message == f"timed out after 0.3 s waiting for {address} to answer"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_504_answer_is_an_http_error_not_a_transport_one(provider: str, emulator: EmulatorHandle) -> None:
    emulator.configure({provider: {"script": [{"status": 504, "message": "upstream gateway slow"}]}})
    make = lambda: emulated(adapter_class(provider), DEPLOYMENTS[provider], emulator.url)  # noqa: E731
    with pytest.raises(errors.ProviderError) as info:
        complete_fresh(make, req())
    assert info.value.kind == "transient"
    assert getattr(info.value, "transport", None) is None
    assert "upstream gateway slow" in info.value.message
