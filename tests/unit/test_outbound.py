"""Which addresses llmqueue's outbound requests may reach, webhook signatures, error scrubbing
and spreadsheet-safe cells: the pure parts (the real requests are in
tests/integration/test_outbound.py)."""

from __future__ import annotations

import ipaddress
import time

import pytest

from jobstore.batch_results import spreadsheet_safe
from workers import outbound, webhooks
from workers.providers.errors import InvalidRequest, scrub, scrub_for

REFUSED = {
    "127.0.0.1": "loopback",
    "127.0.0.2": "loopback",
    "0.0.0.0": "unspecified",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "link-local",  # the cloud metadata service
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    "100.64.0.1": "not public",  # carrier-grade NAT
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:10.0.0.1": "private",
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "link-local",  # NAT64 of 169.254.169.254
}


@pytest.mark.parametrize(("address", "kind"), sorted(REFUSED.items()))
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    assert outbound.Policy().reason(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert outbound.Policy().reason(ipaddress.ip_address(address)) is None


def test_allowed_networks_and_allow_any() -> None:
    policy = outbound.Policy(allowed=(ipaddress.ip_network("127.0.0.1/32"),))
    assert policy.reason(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.reason(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.reason(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert outbound.Policy(allow_any=True).reason(ipaddress.ip_address("10.0.0.1")) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/x", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http:///nohost", "no host"),
        ("http://localhost:8000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://10.0.0.5/hook", "private"),
        ("http://[::ffff:192.168.0.1]/", "private"),
        ("http://0.0.0.0:9/", "unspecified"),
    ],
)
def test_check_url_refuses(url: str, words: str) -> None:
    with pytest.raises(outbound.Refused, match=words):
        outbound.check_url(url, outbound.Policy())


def test_a_name_that_does_not_resolve_passes_intake_only_when_allowed() -> None:
    outbound.check_url("https://hooks.nowhere.invalid/x", outbound.Policy())
    with pytest.raises(outbound.Refused, match="does not resolve"):
        outbound.check_url("https://hooks.nowhere.invalid/x", outbound.Policy(), unresolvable_ok=False)


def test_signatures_verify_and_refuse_tampering_and_replays() -> None:
    secret, body, now = "whsec_abc", b'{"type":"batch.completed"}', int(time.time())
    header = webhooks.signature(secret, now, body)
    assert header.startswith(f"t={now},v1=")
    assert webhooks.verify(secret, header, body)
    assert not webhooks.verify(secret, header, body + b" ")
    assert not webhooks.verify("whsec_other", header, body)
    assert not webhooks.verify(secret, header, body, now=now + 301)
    assert not webhooks.verify(secret, "v1=deadbeef", body)


def test_key_secrets_are_derived_per_key() -> None:
    one, two = webhooks.key_secret("key_1"), webhooks.key_secret("key_2")
    assert one.startswith("whsec_") and one != two and webhooks.key_secret("key_1") == one


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Incorrect API key provided: sk-proj-abc123def456ghi789.", "sk-proj-abc123"),
        ("Incorrect API key provided: sk-abc1************************wxyz.", "wxyz"),
        ("invalid x-api-key lq_Zm9vYmFyYmF6cXV4", "lq_Zm9v"),
        ("API key not valid: AIzaSyA1234567890abcdefghij", "AIzaSy"),
        ("The security token AKIAIOSFODNN7EXAMPLE is invalid", "AKIAIOSFODNN7"),
        ("header was Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload", "eyJhbGci"),
    ],
)
def test_key_shaped_text_is_scrubbed(text: str, gone: str) -> None:
    assert gone not in scrub(text)
    assert "[redacted]" in scrub(text)
    assert gone not in InvalidRequest(text).message  # scrubbed as soon as an error is made


def test_the_calls_own_key_and_internal_host_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMQ_TEST_KEY", "plainsecretvalue42")
    error = InvalidRequest(
        "upstream http://vllm.internal:8000/v1 refused key plainsecretvalue42; see https://api.openai.com/docs"
    )
    scrubbed = scrub_for(error, "LLMQ_TEST_KEY", ["http://vllm.internal:8000/v1", None]).message
    assert "plainsecretvalue42" not in scrubbed and "vllm.internal" not in scrubbed
    assert "[internal host]" in scrubbed and "api.openai.com" in scrubbed  # a public host stays
    error = InvalidRequest("connect to 10.2.3.4:11434 failed")
    assert scrub_for(error, None, ["http://10.2.3.4:11434"]).message == "connect to [internal host] failed"


@pytest.mark.parametrize(
    ("cell", "safe"),
    [("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"), ("\tx", "'\tx"), ("\rx", "'\rx")],
)
def test_spreadsheet_safe_cells(cell: str, safe: str) -> None:
    assert spreadsheet_safe(cell) == safe
    assert spreadsheet_safe("plain text") == "plain text" and spreadsheet_safe(12) == 12
