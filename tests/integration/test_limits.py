"""Hostile input: every limit on what a request may carry is a 413 or a 422 naming the limit
and where (`param`), nothing is stored, and a body too large is refused while it is read (a
2 GB body is answered before any of it is read).

Limits too big to reach quickly in a test (20 MiB images, 32 MiB lines) are lowered for one
test on the settings of the API process the tests serve.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from core.settings import get_settings
from tests.integration.conftest import Stack
from tests.integration.test_bad_input import jobs_of

HI = [{"role": "user", "content": "hi"}]


class Limits:
    """Lowers a limit of the API process the tests serve, for one test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def lower(self, name: str, value: int) -> None:
        assert hasattr(get_settings(), name)
        self.monkeypatch.setattr(get_settings(), name, value)


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> Limits:
    return Limits(monkeypatch)


def error_of(r: Any, status: int, code: str, param: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert (error["code"], error["param"]) == (code, param), error
    return error


def raw_exchange(url: str, head: str, chunks: Iterator[bytes] = iter(()), timeout: float = 10) -> bytes:
    """Send a request head and then body chunks over a plain socket until the server answers;
    returns what it answered (the server may answer before the body is sent)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        answer = b""
        for chunk in chunks:
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer:
                break
            try:
                sock.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
        sock.settimeout(timeout)
        try:
            while b"\r\n\r\n" not in answer or not _complete(answer):
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
        except ConnectionResetError:
            pass
        return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def parse(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


# ---------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    ("path", "content_type", "limit"),
    [
        ("/v1/jobs", "application/json", "max_body_bytes"),
        ("/v1/files", "multipart/form-data; boundary=x", "max_upload_bytes"),
    ],
)
def test_a_declared_two_gigabyte_body_is_refused_before_it_is_read(
    stack: Stack, path: str, content_type: str, limit: str
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {stack.key}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {2 << 30}\r\n\r\n"
    )
    # Only the head is sent: an answer means the server did not wait for (or buffer) the body.
    status, headers, body = parse(raw_exchange(stack.api_url, head))
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert (body["error"]["code"], body["error"]["param"]) == ("body_too_large", "body")
    assert limit in body["error"]["message"]
    assert jobs_of(stack.key) == 0


def test_a_streamed_body_is_cut_at_the_limit(stack: Stack, limits: Limits) -> None:
    limits.lower("max_body_bytes", 64 << 10)
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {stack.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0

    def chunks() -> Iterator[bytes]:  # without end: the server must stop reading on its own
        nonlocal sent
        block = b" " * 16384
        while sent < 64 << 20:
            sent += len(block)
            yield f"{len(block):x}\r\n".encode() + block + b"\r\n"

    status, _, body = parse(raw_exchange(stack.api_url, head, chunks()))
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert "64 KiB" in body["error"]["message"] or "0.0625 MiB" in body["error"]["message"]
    assert sent < 8 << 20, f"the server read {sent} bytes before refusing"


# ---------------------------------------------------------------- uploads


def upload(stack: Stack, content: bytes, name: str = "in.jsonl") -> Any:
    return stack.client.post(
        "/v1/files", data={"purpose": "batch"}, files={"file": (name, content, "application/jsonl")}
    )


def line(n: int, **body: Any) -> str:
    request = {"model": "gpt-4o-mini", "messages": HI, **body}
    return json.dumps(
        {"custom_id": f"r{n}", "method": "POST", "url": "/v1/chat/completions", "body": request}
    )


def test_upload_lines_are_limited_at_fifty_thousand(stack: Stack) -> None:
    assert upload(stack, b"{}\n" * 50_000).status_code == 200
    error = error_of(upload(stack, b"{}\n" * 50_001), 413, "too_many_lines", "file")
    assert "50000" in error["message"] and "max_upload_lines" in error["message"]
    # Blank lines are not requests.
    assert upload(stack, b"{}\n\n" * 50_000).status_code == 200


def test_upload_size_and_line_length(stack: Stack, limits: Limits) -> None:
    limits.lower("max_line_bytes", 4096)
    error = error_of(upload(stack, b"{}\n" + b"x" * 5000 + b"\n"), 413, "line_too_long", "file")
    assert "line 2" in error["message"] and "max_line_bytes" in error["message"]
    limits.lower("max_upload_bytes", 64 << 10)
    error = error_of(upload(stack, b"{}\n" * 40_000), 413, "upload_too_large", "file")
    assert "max_upload_bytes" in error["message"]
    # Past the limit and the form's own room, the body itself is refused while it is read.
    error = error_of(upload(stack, b"{}\n" * 700_000), 413, "body_too_large", "body")


def test_document_batch_jsonl_is_limited(stack: Stack, limits: Limits) -> None:
    limits.lower("max_upload_lines", 3)
    docs = "".join(json.dumps({"id": f"d{i}", "text": "otters"}) + "\n" for i in range(4))
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": "gpt-4o-mini"},
        files={"jsonl": ("docs.jsonl", docs.encode(), "application/x-ndjson")},
    )
    error_of(r, 413, "too_many_lines", "jsonl")
    assert jobs_of(stack.key) == 0


# ---------------------------------------------------------------- what one request carries


def test_messages_are_limited(stack: Stack) -> None:
    many = [{"role": "user", "content": "hi"}] * 2049
    error = error_of(stack.submit({"messages": many}), 422, "too_many_messages", "messages")
    assert "2048" in error["message"] and "max_messages" in error["message"]
    r = stack.client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": many})
    error_of(r, 422, "too_many_messages", "messages")
    assert jobs_of(stack.key) == 0


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_images_are_limited(stack: Stack, limits: Limits) -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    content = [{"type": "text", "text": "what is this?"}] + [image(png)] * 51
    error = error_of(
        stack.submit({"messages": [{"role": "user", "content": content}], "model": "gpt-4o-mini"}),
        422,
        "too_many_images",
        "messages.0.content.51.image_url.url",
    )
    assert "max_images" in error["message"]
    limits.lower("max_image_data_url_bytes", 16 << 10)
    big = "data:image/png;base64," + "A" * (20 << 10)
    error = error_of(
        stack.submit({"messages": [{"role": "user", "content": [image(png), image(big)]}]}),
        413,
        "image_too_large",
        "messages.0.content.1.image_url.url",
    )
    assert "max_image_data_url_bytes" in error["message"]
    assert jobs_of(stack.key) == 0


@pytest.mark.parametrize(
    ("metadata", "code", "param"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata_too_many_keys", "metadata"),
        ({"k" * 65: "v"}, "metadata_key_too_long", "metadata"),
        ({"note": "v" * 513}, "metadata_value_too_long", "metadata.note"),
        ({"tags": ["t" * 100] * 6}, "metadata_value_too_long", "metadata.tags"),
    ],
)
def test_metadata_is_limited_like_openai(
    stack: Stack, metadata: dict[str, Any], code: str, param: str
) -> None:
    error_of(stack.submit({"messages": HI, "metadata": metadata}), 422, code, param)
    if all(isinstance(v, str) for v in metadata.values()):  # OpenAI's metadata holds strings only
        r = stack.client.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI, "metadata": metadata}
        )
        error_of(r, 422, code, param)
    assert jobs_of(stack.key) == 0
    # Sixteen pairs of the longest keys and values are fine.
    most = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert stack.submit({"messages": HI, "metadata": most}).status_code == 202


def test_metadata_total_size(stack: Stack, limits: Limits) -> None:
    limits.lower("max_metadata_bytes", 1024)
    error = error_of(
        stack.submit({"messages": HI, "metadata": {f"k{i}": "v" * 400 for i in range(3)}}),
        422,
        "metadata_too_large",
        "metadata",
    )
    assert "max_metadata_bytes" in error["message"]


def test_batch_and_document_batch_metadata(stack: Stack) -> None:
    file_id = upload(stack, (line(1) + "\n").encode()).json()["id"]
    r = stack.client.post(
        "/v1/batches",
        json={
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {f"k{i}": "v" for i in range(17)},
        },
    )
    error_of(r, 422, "metadata_too_many_keys", "metadata")
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "metadata": json.dumps({"k": "v" * 600})},
        files={"files": ("a.txt", b"otters", "text/plain")},
    )
    error_of(r, 422, "metadata_value_too_long", "metadata.k")


def test_a_batch_line_past_a_limit_fails_alone(stack: Stack) -> None:
    lines = [line(1), line(2, metadata={f"k{i}": "v" for i in range(17)}), line(3, messages=HI * 2049)]
    file_id = upload(stack, "\n".join(lines).encode()).json()["id"]
    r = stack.client.post(
        "/v1/batches",
        json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
    )
    assert r.status_code == 200, r.text
    errors = {e["line"]: e for e in r.json()["errors"]["data"]}
    assert errors[2]["code"] == "metadata_too_many_keys"
    assert errors[3]["code"] == "too_many_messages"
    assert r.json()["request_counts"]["total"] == 3


def test_document_line_metadata_fails_alone(stack: Stack) -> None:
    docs = [
        json.dumps({"id": "ok", "text": "otters"}),
        json.dumps({"id": "big", "text": "otters", "metadata": {"k" * 65: "v"}}),
    ]
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": "Summarise: {document}", "model": "gpt-4o-mini"},
        files={"jsonl": ("docs.jsonl", "\n".join(docs).encode(), "application/x-ndjson")},
    )
    assert r.status_code == 202, r.text
    [error] = r.json()["errors"]
    assert error["line"] == 2 and "max_metadata_key_chars" in error["message"]


@pytest.mark.parametrize(
    ("prompt", "code"),
    [("Summarise this.", "missing_placeholder"), ("{document} and again {document}", "repeated_placeholder")],
)
def test_document_prompt_names_the_document_exactly_once(stack: Stack, prompt: str, code: str) -> None:
    r = stack.client.post(
        "/v1/document_batches",
        data={"prompt": prompt, "model": "gpt-4o-mini"},
        files={"files": ("a.txt", b"otters", "text/plain")},
    )
    error = error_of(r, 422, code, "prompt")
    assert "exactly once" in error["message"]
    assert jobs_of(stack.key) == 0
