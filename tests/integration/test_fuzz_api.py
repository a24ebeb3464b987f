"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): valid and
invalid requests to every documented operation, sent over HTTP to the API served by uvicorn
on the real stack (Postgres, Redis, a worker, the emulator), authenticated as an admin key.
No answer may be a server error, and every refusal is in the one error shape.

Time-bounded: a few examples per operation and mode (FUZZ_EXAMPLES, 40), derandomized so
every run sends the same requests; it takes about a minute. A failure lists each request
that got a server error as a curl command, to replay by hand. A longer, random hunt:
`FUZZ_RANDOM=1 FUZZ_EXAMPLES=250 FUZZ_BUDGET_S=1200 pytest --timeout 0 -s
tests/integration/test_fuzz_api.py` (13,500 requests, about four minutes).
"""

from __future__ import annotations

import os
import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.integration.conftest import Stack

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))  # per operation and mode
# A guard: the run stops generating past this (the default run takes well under it).
BUDGET_S = float(os.environ.get("FUZZ_BUDGET_S", "240"))


def test_no_operation_answers_a_server_error(admin_stack: Stack) -> None:
    api = admin_stack.api_url
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    headers = {"Authorization": f"Bearer {admin_stack.key}"}
    failures: list[str] = []
    sent = 0
    started = time.monotonic()

    def exercise(case: Any) -> None:
        nonlocal sent
        if time.monotonic() - started > BUDGET_S:
            return
        sent += 1
        response = case.call(base_url=api, headers=headers, timeout=60)
        status = response.status_code
        problem = None
        if status >= 500:
            problem = f"{status}: {response.text[:300]}"
        elif status >= 400:
            try:
                error = response.json()["error"]
                if not {"message", "type", "param", "code"} <= set(error):
                    problem = f"{status} not in the error shape: {response.text[:300]}"
            except (ValueError, KeyError, TypeError):
                problem = f"{status} not in the error shape: {response.text[:300]}"
        if problem is not None:
            failures.append(f"{case.method} {case.formatted_path} -> {problem}\n  {case.as_curl_command()}")

    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            run = settings(
                max_examples=FUZZ_EXAMPLES,
                deadline=None,
                derandomize=os.environ.get("FUZZ_RANDOM") is None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(case=operation.as_strategy(generation_mode=mode))(exercise))
            try:
                run()
            except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters)
                continue
    elapsed = time.monotonic() - started
    print(
        f"\nfuzzed {len(operations)} operations, {sent} requests in {elapsed:.0f} s: {len(failures)} failed"
    )
    assert elapsed < BUDGET_S, "the fuzzing budget ran out before every operation was tried"
    assert not failures, "\n".join(failures[:20])
