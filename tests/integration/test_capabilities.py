"""What cannot be served is refused clearly: capabilities, max_tokens and context checked at
submission (a 422 naming the capability in `param`, `code` and the message), an unknown
model, a missing key (the job fails naming the variable), a provider's 400, and a key that
is set never showing up in a log line, a database row or an API response.

Workers with a special configuration consume provider.azure only (the session worker does
not), with their own catalog file that points the Azure deployment at the emulator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.errors import ApiError
from api.schemas.jobs import JobCreate
from api.validation import check_routable
from jobstore.jobs import new_job
from routing.catalog import DEFAULT_CATALOG_PATH, catalog_from_dict, get_catalog
from tests.integration.conftest import Stack, WorkerProcess

SECRET = "sk-test-SECRET123"
MISSING_VAR = "LLMQ_TEST_UNSET_AZURE_KEY"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
TOOL = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}


def ask(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def refused(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    r = stack.submit(body)
    assert r.status_code == 422, r.text
    error: dict[str, Any] = r.json()["error"]
    return error


# ------------------------------------------------------------------ checked at submission


@pytest.mark.parametrize(
    ("body", "param", "code", "capability"),
    [
        (
            ask("claude-haiku-4-5", response_format=SCHEMA),
            "response_format",
            "unsupported_json_schema",
            "json_schema",
        ),
        (
            ask("amazon.nova-lite-v1:0", response_format={"type": "json_object"}),
            "response_format",
            "unsupported_json_mode",
            "json_mode",
        ),
        (
            {
                "model": "command-r7b-12-2024",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, IMAGE]}],
            },
            "messages.0.content.1",
            "unsupported_vision",
            "vision",
        ),
        (
            {
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [IMAGE, {"type": "text", "text": "describe"}]},
                ],
            },
            "messages.1.content.0",
            "unsupported_vision",
            "vision",
        ),
    ],
    ids=["json_schema", "json_mode", "vision", "vision-second-message"],
)
def test_a_capability_the_model_lacks_is_a_422_naming_it(
    stack: Stack, body: dict[str, Any], param: str, code: str, capability: str
) -> None:
    error = refused(stack, body)
    assert (error["param"], error["code"]) == (param, code)
    assert f"does not support {capability}" in error["message"]
    assert body["model"] in error["message"]
    assert not stack.emulator.calls()


def test_max_tokens_above_the_models_limit_is_a_422(stack: Stack) -> None:
    error = refused(stack, ask("command-r7b-12-2024", max_tokens=4001))
    assert (error["param"], error["code"]) == ("max_tokens", "max_tokens_too_large")
    assert "4001" in error["message"] and "4000" in error["message"]


def test_a_prompt_longer_than_the_context_window_is_a_422(stack: Stack) -> None:
    error = refused(stack, ask("gpt-4o-mini", text="queue " * 130_000))
    assert (error["param"], error["code"]) == ("messages", "context_length_exceeded")
    assert "128000 window" in error["message"]


def test_an_unknown_model_is_a_422(stack: Stack) -> None:
    error = refused(stack, ask("gpt-17-ultra"))
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "gpt-17-ultra" in error["message"]


def test_automatic_routing_skips_models_without_the_capability(stack: Stack) -> None:
    r = stack.submit({"messages": [{"role": "user", "content": "json please"}], "response_format": SCHEMA})
    assert r.status_code == 202, r.text
    job = stack.wait(r.json()["id"])
    assert job["status"] == "succeeded"
    assert "json_schema" in get_catalog().model(job["model"]).capabilities  # type: ignore[union-attr]


def _catalog_without(capability: str) -> Any:
    data = {
        "models": [
            {
                "id": "plain-model",
                "provider": "openai",
                "context_window": 8000,
                "max_output_tokens": 1000,
                "input_price": "1",
                "output_price": "2",
                "quality": 50,
                "capabilities": [c for c in ("tools", "vision", "json_mode", "streaming") if c != capability],
            }
        ],
        "deployments": [{"name": "openai/plain-model", "model": "plain-model"}],
    }
    return catalog_from_dict(data, "<test>")


@pytest.mark.parametrize(
    ("extra", "capability", "param"),
    [({"tools": [TOOL]}, "tools", "tools"), ({"stream": True}, "streaming", "stream")],
)
def test_tools_or_stream_on_a_model_without_them_names_the_capability(
    extra: dict[str, Any], capability: str, param: str
) -> None:
    """The default catalog has no model without tools or streaming: a catalog of its own."""
    create = JobCreate.model_validate(ask("plain-model", **extra))
    with pytest.raises(ApiError) as caught:
        job = new_job(owner_id="key_test", request=create.chat_request(), strategy=None, model=create.model)
        job.stream = create.stream
        check_routable(job, _catalog_without(capability), None)
    assert caught.value.status == 422
    assert (caught.value.param, caught.value.code) == (param, f"unsupported_{capability}")
    assert f"does not support {capability}" in caught.value.message


# ------------------------------------------------------------------ keys and provider errors


def azure_catalog(tmp_path: Path, emulator_url: str, api_key_env: str) -> Path:
    """The default catalog with the Azure deployment pointed at the emulator (a real endpoint,
    as far as the worker knows) and its key read from `api_key_env`."""
    text = DEFAULT_CATALOG_PATH.read_text()
    old = 'base_url = "https://example-resource.openai.azure.com"'
    assert old in text
    text = text.replace(old, f'base_url = "{emulator_url}/azure"\napi_key_env = "{api_key_env}"')
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return path


@pytest.fixture
def azure_worker_factory(tmp_path: Path, worker: WorkerProcess) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        proc = WorkerProcess(queues="provider.azure", concurrency=4, env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def db_text(job_id: str) -> str:
    """Every column of the job's row and its attempts' rows, as text."""
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        job = conn.execute("SELECT row_to_json(j)::text FROM jobs j WHERE id = %s", (job_id,)).fetchall()
        attempts = conn.execute(
            "SELECT row_to_json(a)::text FROM attempts a WHERE job_id = %s", (job_id,)
        ).fetchall()
    assert job and attempts
    return "\n".join(r[0] for r in (*job, *attempts))


def test_a_missing_key_fails_the_job_naming_the_variable(
    stack: Stack, tmp_path: Path, azure_worker_factory: Any
) -> None:
    catalog = azure_catalog(tmp_path, stack.emulator.url, MISSING_VAR)
    azure_worker_factory(
        {"LLMQUEUE_CATALOG": str(catalog), "LLMQUEUE_EMULATOR_MODE": "never", MISSING_VAR: ""}
    )
    job = stack.wait(stack.submit(ask("azure/gpt-4o-mini", "no key here")).json()["id"])
    assert job["status"] == "failed", job
    assert MISSING_VAR in job["error"]["message"]
    assert "missing_credentials" in (job["error"]["type"] + job["error"]["message"])
    assert {a["error"]["type"] for a in job["attempts"]} <= {"failover:missing_credentials"}
    assert len(job["attempts"]) == 1  # a key that is not there will not appear on a retry
    assert not stack.emulator.calls()  # no call was attempted without a key


def test_a_key_that_is_set_never_appears_in_logs_rows_or_responses(
    stack: Stack, tmp_path: Path, azure_worker_factory: Any
) -> None:
    catalog = azure_catalog(tmp_path, stack.emulator.url, "AZURE_OPENAI_API_KEY")
    proc = azure_worker_factory(
        {"LLMQUEUE_CATALOG": str(catalog), "LLMQUEUE_EMULATOR_MODE": "auto", "AZURE_OPENAI_API_KEY": SECRET}
    )
    stack.emulator.configure(
        {
            "azure": {
                "script": [
                    {"status": 200},
                    {"status": 401, "message": "bad key"},
                    {"status": 400, "message": "temperature too high"},
                ]
            }
        }
    )
    responses: list[str] = []
    ended = []
    for text in ("works", "rejected key", "bad request"):
        r = stack.submit(ask("azure/gpt-4o-mini", text))
        responses.append(r.text)
        ended.append(stack.wait(r.json()["id"]))
        responses.append(stack.client.get(f"/v1/jobs/{r.json()['id']}").text)
    ok, unauthorized, invalid = ended
    assert ok["status"] == "succeeded"
    assert unauthorized["attempts"][0]["error"]["type"] == "failover:auth"
    assert invalid["status"] == "failed" and invalid["error"]["type"] == "invalid_request"
    assert "temperature too high" in invalid["error"]["message"]
    assert len(stack.emulator.calls(provider="azure")) >= 3  # the calls went out, with the key
    time.sleep(0.5)  # let the worker's last log lines reach the pipe
    proc.stop()
    log = "".join(proc.log)
    assert "azure/gpt-4o-mini" in log  # the log is captured: it has the attempts' lines
    assert SECRET not in log
    for job in ended:
        assert SECRET not in db_text(job["id"])
    assert not any(SECRET in r for r in responses)


def test_a_provider_400_fails_with_its_message_on_a_non_openai_provider(stack: Stack) -> None:
    stack.emulator.configure(
        {"anthropic": {"script": [{"status": 400, "message": "messages: roles must alternate"}]}}
    )
    job = stack.wait(stack.submit(ask("claude-haiku-4-5", "bad")).json()["id"])
    assert job["status"] == "failed"
    assert job["error"]["type"] == "invalid_request"
    assert "roles must alternate" in job["error"]["message"]
    assert len(job["attempts"]) == 1
