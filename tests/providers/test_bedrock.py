"""The Bedrock adapter through real boto3 (Converse / ConverseStream) against the emulator over HTTP.

What every adapter must do (errors, refused connections, keys, streaming) is in test_conformance.py.
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from core.types import ChatRequest, ChatResponse, FinishReason
from emulator.bedrock_format import encode_event, event, exception_event
from tests.conftest import EmulatorHandle
from tests.providers.support import (
    complete_fresh,
    discard,
    emulated,
    raises_mapped,
    req,
    tool_round_trip,
)
from workers.providers import errors
from workers.providers.base import TextSink
from workers.providers.bedrock import BedrockProvider, usage_from_bedrock
from workers.providers.bedrock_request import to_bedrock_params

DEPLOYMENT = "bedrock/nova-lite"

# the shared tool, with a description (Converse carries it)
TOOLS = [
    {
        "function": {
            "name": "get_weather",
            "description": "Weather now",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    }
]


def provider(url: str, timeout_s: float = 30) -> BedrockProvider:
    return emulated(BedrockProvider, DEPLOYMENT, url, timeout_s)


def complete(
    url: str, request: ChatRequest, sink: TextSink | None = None, timeout_s: float = 30
) -> ChatResponse:
    return complete_fresh(lambda: provider(url, timeout_s), request, sink)


def test_event_stream_encoding_decodes_with_botocore() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "héllo"}}))
    buffer.add_data(exception_event("throttlingException", "slow down"))
    buffer.add_data(encode_event({}, b""))
    first, second, empty = list(buffer)
    assert first.headers == {
        ":event-type": "contentBlockDelta",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    assert json.loads(first.payload) == {"contentBlockIndex": 0, "delta": {"text": "héllo"}}
    assert second.headers[":exception-type"] == "throttlingException"
    assert json.loads(second.payload) == {"message": "slow down"}
    assert empty.headers == {} and empty.payload == b""


def test_plain_text_with_usage(emulator: EmulatorHandle) -> None:
    r = complete(emulator.url, req())
    assert "Tell me about the sea" in r.text
    assert r.finish_reason is FinishReason.STOP
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.provider_request_id and r.model == "amazon.nova-lite-v1:0"
    assert emulator.calls(provider="bedrock")[0]["model"] == "amazon.nova-lite-v1:0"


def test_system_prompt_and_multi_turn(emulator: EmulatorHandle) -> None:
    request = req(
        messages=[
            {"role": "system", "content": "Be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ]
    )
    params = to_bedrock_params(request, "m")
    assert params["system"] == [{"text": "Be brief"}]
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    r = complete(emulator.url, request)
    assert "second question" in r.text


def test_max_tokens_stops_with_length(emulator: EmulatorHandle) -> None:
    r = complete(emulator.url, req(max_tokens=3, temperature=0.2, top_p=0.9, stop=["END"]))
    assert r.finish_reason is FinishReason.LENGTH
    assert r.usage.output_tokens == 3


def test_tool_call_round_trip(emulator: EmulatorHandle) -> None:
    tool_round_trip(lambda request: complete(emulator.url, request))


def test_tool_choice_none_sends_no_tools(emulator: EmulatorHandle) -> None:
    assert "toolConfig" not in to_bedrock_params(req(tools=TOOLS, tool_choice="none"), "m")
    forced = to_bedrock_params(
        req(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}), "m"
    )
    assert forced["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    r = complete(emulator.url, req(tools=TOOLS, tool_choice="none"))
    assert r.tool_calls == [] and r.finish_reason is FinishReason.STOP


def test_json_schema_uses_output_config(emulator: EmulatorHandle) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}}}
    r = complete(
        emulator.url,
        req(response_format={"type": "json_schema", "json_schema": {"name": "book", "schema": schema}}),
    )
    assert json.loads(r.text) == {"title": "example", "year": 42}


def test_json_object_mode_is_not_supported(emulator: EmulatorHandle) -> None:
    with pytest.raises(errors.InvalidRequest, match="no JSON mode"):
        complete(emulator.url, req(response_format={"type": "json_object"}))
    assert emulator.calls() == []


def test_image_input(emulator: EmulatorHandle) -> None:
    r = complete(
        emulator.url,
        req(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is in this picture"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    ],
                }
            ]
        ),
    )
    assert r.usage.input_tokens > 85


def test_http_image_is_fetched_and_sent_as_bytes(emulator: EmulatorHandle) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")  # format comes from the bytes
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/cat"
        params = to_bedrock_params(
            req(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]),
            "m",
        )
        r = complete(
            emulator.url,
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "describe"},
                            {"type": "image_url", "image_url": {"url": url}},
                        ],
                    }
                ]
            ),
        )
        server.shutdown()
    assert params["messages"][0]["content"] == [{"image": {"format": "png", "source": {"bytes": png}}}]
    assert r.usage.input_tokens > 85


def test_unsupported_image_type_is_invalid(emulator: EmulatorHandle) -> None:
    with pytest.raises(errors.InvalidRequest, match="png, jpeg"):
        complete(
            emulator.url,
            req(
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}
                        ],
                    }
                ]
            ),
        )


def test_usage_counts_cache_reads_as_input() -> None:
    u = usage_from_bedrock(
        {
            "inputTokens": 100,
            "outputTokens": 20,
            "totalTokens": 1120,
            "cacheReadInputTokens": 900,
            "cacheWriteInputTokens": 100,
        }
    )
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens) == (1100, 900, 20)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_model_timeout_408_is_transient(emulator: EmulatorHandle, stream: bool) -> None:
    script = {"status": 408}  # ModelTimeoutException
    emulator.configure({"bedrock": {"script": [script]}})
    err = raises_mapped(
        script, errors.Transient, lambda: complete(emulator.url, req(), discard if stream else None)
    )
    assert err.status_code == 408


def test_timeout_is_transient(emulator: EmulatorHandle) -> None:
    emulator.configure({"bedrock": {"latency_ms": 1500}})
    with pytest.raises(errors.Transient, match=r"timed out after 0\.3 s"):
        complete(emulator.url, req(), timeout_s=0.3)
