"""A provider's error text reaches users without keys or internal host names: what the worker
stores on the attempt and the job (and so what the API, the batch files and the console
show) is scrubbed, on the real pipeline."""

from __future__ import annotations

import os

from tests.integration.conftest import Stack


def test_provider_error_text_is_scrubbed_before_it_is_stored(stack: Stack) -> None:
    emulator_host = os.environ["LLMQUEUE_EMULATOR_URL"].removeprefix("http://")
    leaky = (
        f"Incorrect API key provided: sk-proj-Abc123Def456Ghi789 (tried lq_Zm9vYmFyYmF6cXV4MTIz) "
        f"at http://{emulator_host}/v1/chat/completions; see https://platform.openai.com/docs"
    )
    stack.emulator.configure({"gpt-4o-mini": {"script": [{"status": 400, "message": leaky}]}})
    job = stack.submit({"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini"}).json()
    done = stack.wait(job["id"])
    assert done["status"] == "failed"
    shown = [done["error"]["message"], *(a["error"]["message"] for a in done["attempts"] if a["error"])]
    for message in shown:
        assert "sk-proj-Abc123" not in message and "lq_Zm9v" not in message
        assert emulator_host not in message and "127.0.0.1" not in message
        assert "[redacted]" in message and "[internal host]" in message
        assert "https://platform.openai.com/docs" in message  # a public address is kept


def test_an_embedding_calls_error_text_is_scrubbed_too(stack: Stack) -> None:
    emulator_host = os.environ["LLMQUEUE_EMULATOR_URL"].removeprefix("http://")
    leaky = f"Unauthorized: key sk-proj-Abc123Def456Ghi789 refused by http://{emulator_host}/v1/embeddings"
    stack.emulator.configure({"mistral-embed": {"script": [{"status": 400, "message": leaky}]}})
    body = {"model": "mistral-embed", "input": ["a starter"]}
    accepted = stack.client.post("/v1/embeddings/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    done = stack.wait(accepted.json()["data"][0]["id"])
    assert done["status"] == "failed"
    shown = [done["error"]["message"], *(a["error"]["message"] for a in done["attempts"] if a["error"])]
    for message in shown:
        assert "sk-proj-Abc123" not in message and emulator_host not in message
        assert "[redacted]" in message and "[internal host]" in message
