"""A model's answer holding what Postgres cannot store as it is (a NUL character, an unpaired
surrogate) ends its job after exactly one provider call, on the real stack: the worker's SDK
reads the emulator's answer (`answer_text`, sent as JSON escapes `\\u0000` and `\\ud800`), the
writer stores it scrubbed, and the job succeeds; it is never left running to be bought again.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack

MODEL = "gpt-4o-mini"  # served by the suite's shared worker (provider.openai)


def say(stack: Stack, text: str) -> None:
    """Make every answer of MODEL be `text`. Posted as ASCII JSON: httpx's own encoder refuses
    an unpaired surrogate, the emulator's JSON parser takes its escape."""
    body = json.dumps({"scopes": {MODEL: {"answer_text": text}}, "seed": 0})
    r = httpx.post(
        f"{stack.emulator.url}/_emulator/config", content=body, headers={"content-type": "application/json"}
    )
    r.raise_for_status()


def model_calls(stack: Stack) -> list[dict[str, Any]]:
    return [c for c in stack.emulator.calls() if c["model"] == MODEL and c["kind"] == "chat"]


@pytest.mark.parametrize(
    ("said", "stored"),
    [
        ("before\x00after", "beforeafter"),  # NUL dropped
        ("lone \ud800 surrogate", "lone ? surrogate"),  # an unpaired surrogate replaced
        ("both\x00 \udfff", "both ?"),
    ],
    ids=["nul", "surrogate", "both"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_unstorable_answer_ends_its_job_after_one_call(
    stack: Stack, said: str, stored: str, stream: bool
) -> None:
    say(stack, said)
    body = {"messages": [{"role": "user", "content": "say it"}], "model": MODEL, "stream": stream}
    job = stack.submit(body)
    assert job.status_code < 300, job.text
    done = stack.wait(job.json()["id"], timeout=30)
    assert done["status"] == "succeeded", done
    assert done["result"] == stored
    assert len(done["attempts"]) == 1
    assert len(model_calls(stack)) == 1  # bought once
