"""The `llmqueue` CLI as a user runs it: a subprocess against the running API (real stack)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Stack


def cli(
    stack: Stack | None, *args: str, key: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    env.pop("LLMQUEUE_API_KEY", None)
    if stack is not None:
        env["LLMQUEUE_API_URL"] = stack.api_url
        env["LLMQUEUE_API_KEY"] = key or stack.key
    return subprocess.run(
        [sys.executable, "-m", "llmqueue.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_key_names_the_fix() -> None:
    result = cli(None, "jobs")
    assert result.returncode == 2
    assert "LLMQUEUE_API_KEY is not set" in result.stderr and "llmqueue keys create" in result.stderr


def test_wrong_key_is_a_one_line_error(stack: Stack) -> None:
    result = cli(stack, "jobs", key="lq_not_a_real_key")
    assert result.returncode == 1 and "invalid API key" in result.stderr


def test_submit_wait_then_jobs_and_costs(stack: Stack) -> None:
    result = cli(stack, "submit", "Explain queues to a cat", "--model", "gpt-4o-mini", "--wait")
    assert result.returncode == 0, result.stderr
    assert "Explain queues to a cat" in result.stdout
    assert "openai/gpt-4o-mini" in result.stderr and "$0.0000" in result.stderr

    listing = cli(stack, "jobs", "--limit", "5")
    assert listing.returncode == 0, listing.stderr
    assert "succeeded" in listing.stdout and "gpt-4o-mini" in listing.stdout

    spend = cli(stack, "costs")
    assert spend.returncode == 0, spend.stderr
    assert "spend by model" in spend.stdout and "spend by provider" in spend.stdout
    assert (
        "gpt-4o-mini" in spend.stdout
        and "openai" in spend.stdout
        and "total: 1 calls in 1 jobs" in spend.stdout
    )


def test_submit_with_bad_model_names_the_param(stack: Stack) -> None:
    result = cli(stack, "submit", "hello", "--model", "no-such-model")
    assert result.returncode == 1 and "param: model" in result.stderr


def test_batch_run_wait_shows_progress_and_results(stack: Stack, tmp_path: Path) -> None:
    for i, topic in enumerate(("otters", "glaciers", "printing presses")):
        (tmp_path / f"doc{i}.txt").write_text(f"A short essay about {topic}. It has two sentences.")
    (tmp_path / "notes.bin").write_bytes(b"\x00")  # not a text suffix: left out of the directory
    result = cli(
        stack,
        "batch",
        "run",
        str(tmp_path),
        "--prompt",
        "Summarise: {document}",
        "--model",
        "gpt-4o-mini",
        "--wait",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 documents accepted" in out
    assert "3/3" in out and "failed 0" in out  # the progress bar's last frame
    assert "doc0.txt" in out and "doc2.txt" in out and "Summarise: A short essay about" in out
    assert "3 succeeded, 0 failed, 0 cancelled of 3" in out
    batch_id = out.split("batch ", 1)[1].split(":", 1)[0]

    status = cli(stack, "batch", "status", batch_id)
    assert status.returncode == 0 and "completed: 3 succeeded" in status.stdout
    as_csv = cli(stack, "batch", "results", batch_id, "--format", "csv")
    assert as_csv.returncode == 0 and as_csv.stdout.splitlines()[0].startswith("id,line,status")
    assert len(as_csv.stdout.strip().splitlines()) == 4
    cancel = cli(stack, "batch", "cancel", batch_id)
    assert cancel.returncode == 0 and "completed" in cancel.stdout  # an ended batch stays as it was
    missing = cli(stack, "batch", "status", "batch_nope")
    assert missing.returncode == 1 and "no document batch" in missing.stderr


def test_a_bad_setting_is_named_without_a_traceback() -> None:
    for command, env in (
        (["worker", "-Q", "dispatch"], {"LLMQUEUE_BREAKER_RAMP_S": "-1"}),
        (["migrate"], {"LLMQUEUE_ACTIVE_PROBE_S": "soon"}),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "llmqueue.cli", *command],
            env={**os.environ, **env, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        name = next(iter(env))
        assert done.returncode == 2, done.stderr
        assert f"{name}={env[name]!r}" in done.stderr and "fix the environment variable" in done.stderr
        assert "Traceback" not in done.stderr
