"""No request to where it should not go, on the real stack: webhook URLs at internal addresses
are refused at intake; at delivery every connection and every redirect hop is checked (a
redirect to an internal address is not followed, and the internal server gets nothing);
webhooks are signed with the key's secret and retried with backoff; budget alerts arrive
signed too; images a worker fetches for Bedrock obey the same guard.

The test run allows 127.0.0.1 only (tests/conftest.py); servers that must never be reached
listen on 127.0.0.2, which is loopback as well and stays refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from core.types import ChatRequest
from tests.integration.conftest import Stack, make_key
from workers import outbound, webhooks
from workers.providers.bedrock_request import to_bedrock_params
from workers.providers.errors import InvalidRequest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """An HTTP server that records every request; `answer` decides each response."""

    host: str = "127.0.0.1"
    answer: Callable[[Hit, int], tuple[int, dict[str, str], bytes]] = lambda hit, n: (204, {}, b"")
    hits: list[Hit] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                hit = Hit(self.command, self.path, dict(self.headers), self.rfile.read(length))
                recorder.hits.append(hit)
                status, headers, body = recorder.answer(hit, len(recorder.hits))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.server.server_port}{path}"

    def wait_for(self, n: int, timeout: float = 60) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while len(self.hits) < n:
            assert time.monotonic() < deadline, f"{len(self.hits)} of {n} requests arrived"
            time.sleep(0.1)
        return self.hits


@pytest.fixture
def servers() -> Iterator[Callable[..., Recorder]]:
    made: list[Recorder] = []

    def make(**options: Any) -> Recorder:
        made.append(Recorder(**options))
        return made[-1]

    yield make
    for recorder in made:
        recorder.server.shutdown()


def redirect_to(target: str, status: int = 307) -> Callable[[Hit, int], tuple[int, dict[str, str], bytes]]:
    return lambda hit, n: (status, {"Location": target}, b"")


def document_batch(stack: Stack, webhook_url: str) -> Any:
    return stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": "gpt-4o-mini", "webhook_url": webhook_url},
        files={"files": ("a.txt", b"Otters hold hands while they sleep.", "text/plain")},
    )


def wait_ended(stack: Stack, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        batch: dict[str, Any] = stack.client.get(f"/v1/document_batches/{batch_id}").json()
        if batch["status"] in ("completed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)


def own_secret(api_url: str, key: str) -> str:
    r = httpx.get(f"{api_url}/v1/keys/self/webhook-secret", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    secret: str = r.json()["secret"]
    return secret


# ---------------------------------------------------------------- intake


INTERNAL_URLS = [
    ("http://127.0.0.2:9/hook", "loopback"),
    ("http://[::1]:9/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://10.0.0.7/hook", "private"),
    ("http://[::ffff:192.168.1.9]/hook", "private"),
    ("gopher://example.com/x", "only http and https"),
]


@pytest.mark.parametrize(("url", "words"), INTERNAL_URLS)
def test_internal_webhook_urls_are_refused_at_intake(stack: Stack, url: str, words: str) -> None:
    r = document_batch(stack, url)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"]) == ("webhook_url", "webhook_url_refused")
    assert words in error["message"]
    upload = stack.client.post(
        "/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", b"{}\n", "application/jsonl")}
    )
    r = stack.client.post(
        "/v1/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "webhook_url": url,
        },
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_url_refused", r.text


def test_internal_alert_webhooks_are_refused_at_intake(admin_stack: Stack) -> None:
    r = admin_stack.client.post("/v1/keys", json={"name": "x", "alert_webhook_url": "http://10.1.1.1/a"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "alert_webhook_url", r.text
    key_id = admin_stack.client.post("/v1/keys", json={"name": "y"}).json()["id"]
    r = admin_stack.client.patch(f"/v1/keys/{key_id}", json={"alert_webhook_url": "http://[fe80::1]/a"})
    assert r.status_code == 422 and "link-local" in r.json()["error"]["message"], r.text


# ---------------------------------------------------------------- delivery


def test_a_redirect_to_an_internal_address_is_not_followed(
    stack: Stack, servers: Callable[..., Recorder]
) -> None:
    internal = servers(host="127.0.0.2")
    public = servers(answer=redirect_to(internal.url("/stolen")))
    batch = document_batch(stack, public.url()).json()
    assert wait_ended(stack, batch["id"])["status"] == "completed"
    public.wait_for(1)
    time.sleep(3)  # a retry would come after 2 s: a refused URL is not retried
    assert len(public.hits) == 1 and internal.hits == []
    # The connection itself is guarded too, not only the URL checked before it.
    with (
        pytest.raises(outbound.Refused, match="loopback"),
        outbound.guarded_client(outbound.Policy.of(), 5) as client,
    ):
        client.get(internal.url())
    assert internal.hits == []


def test_webhooks_are_signed_followed_through_allowed_redirects_and_retried(
    stack: Stack, servers: Callable[..., Recorder]
) -> None:
    final = servers(answer=lambda hit, n: (500, {}, b"") if n == 1 else (204, {}, b""))
    first = servers(answer=redirect_to(final.url("/moved")))
    batch = document_batch(stack, first.url()).json()
    assert wait_ended(stack, batch["id"])["status"] == "completed"
    hits = final.wait_for(2, timeout=30)  # refused once (HTTP 500), delivered on the retry
    secret, others = own_secret(stack.api_url, stack.key), own_secret(stack.api_url, make_key())
    for hit in hits:
        assert hit.method == "POST" and hit.path == "/moved"  # a 307 keeps the method and body
        assert webhooks.verify(secret, hit.headers["X-Llmqueue-Signature"], hit.body)
        assert not webhooks.verify(others, hit.headers["X-Llmqueue-Signature"], hit.body)
    payload = json.loads(hits[-1].body)
    assert payload["type"] == "batch.completed" and payload["data"]["id"] == batch["id"]
    assert hits[-1].headers["X-Llmqueue-Event"] == "batch.completed"


def test_budget_alerts_reach_the_keys_webhook_signed(
    admin_stack: Stack, servers: Callable[..., Recorder]
) -> None:
    hook = servers()
    created = admin_stack.client.post(
        "/v1/keys",
        json={
            "name": "alerted",
            "budget": {"limit_usd": "5", "soft_limit_usd": "0.0000001", "period": "day"},
            "alert_webhook_url": hook.url("/alerts"),
        },
    ).json()
    member = Stack(admin_stack.api_url, created["secret"], admin_stack.emulator)
    job = member.submit({"messages": [{"role": "user", "content": "hello"}], "model": "gpt-4o-mini"}).json()
    assert member.wait(job["id"])["status"] == "succeeded"
    [hit] = hook.wait_for(1, timeout=30)
    secret = own_secret(member.api_url, member.key)
    assert webhooks.verify(secret, hit.headers["X-Llmqueue-Signature"], hit.body)
    payload = json.loads(hit.body)
    assert payload["type"] == "budget.soft_limit_crossed"
    assert payload["data"]["key_id"] == created["id"] and Decimal(
        payload["data"]["soft_limit_usd"]
    ) == Decimal("1e-7")
    assert float(payload["data"]["spent_usd"]) > 0


def test_the_signing_secret_is_the_keys_own(stack: Stack) -> None:
    other = make_key("other")
    assert own_secret(stack.api_url, stack.key) != own_secret(stack.api_url, other)
    r = httpx.get(f"{stack.api_url}/v1/keys/self/webhook-secret")
    assert r.status_code == 401


# ---------------------------------------------------------------- images a worker fetches


def image_request(url: str) -> ChatRequest:
    return ChatRequest.model_validate(
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    )


def test_bedrock_images_are_not_fetched_from_internal_addresses(servers: Callable[..., Recorder]) -> None:
    internal = servers(host="127.0.0.2", answer=lambda hit, n: (200, {"Content-Type": "image/png"}, PNG))
    with pytest.raises(InvalidRequest, match="loopback"):
        to_bedrock_params(image_request(internal.url("/cat.png")), "model")
    bouncer = servers(answer=redirect_to(internal.url("/cat.png"), status=302))
    with pytest.raises(InvalidRequest, match="loopback"):
        to_bedrock_params(image_request(bouncer.url("/cat.png")), "model")
    assert internal.hits == [] and len(bouncer.hits) == 1
    # An allowed server's image, through an allowed redirect, is fetched and sent as bytes.
    allowed = servers(answer=lambda hit, n: (200, {"Content-Type": "image/png"}, PNG))
    hop = servers(answer=redirect_to(allowed.url("/cat.png"), status=301))
    params = to_bedrock_params(image_request(hop.url("/x")), "model")
    assert params["messages"][0]["content"] == [{"image": {"format": "png", "source": {"bytes": PNG}}}]


def test_redirect_hops_are_capped(servers: Callable[..., Recorder]) -> None:
    loop = servers()
    loop.answer = redirect_to(loop.url("/again"), status=302)
    with pytest.raises(outbound.Refused, match="redirects"):
        outbound.fetch("GET", loop.url(), policy=outbound.Policy.of(), timeout=5)
    assert len(loop.hits) == outbound.Policy.of().max_redirects + 1
