"""The `llmqueue` CLI as a user runs it: a subprocess against the running API (real stack)."""

from __future__ import annotations

import json
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


def test_jobs_shows_a_failed_jobs_error(stack: Stack) -> None:
    stack.emulator.configure(
        {
            "gpt-4o-mini": {
                "script": [{"status": 400, "message": "Invalid value for 'temperature': " + "x" * 300}]
            }
        }
    )
    failed = cli(stack, "submit", "this one fails", "--model", "gpt-4o-mini", "--wait")
    assert failed.returncode == 1 and "Invalid value for 'temperature'" in failed.stderr
    listing = cli(stack, "jobs", "--limit", "1")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if "failed" in line)
    assert "invalid_request: Invalid value for 'temperature'" in row
    assert "x" * 120 not in listing.stdout and "..." in row  # cut, not the whole message


def test_listings_print_json_for_scripts(stack: Stack, tmp_path: Path) -> None:
    ok = cli(stack, "submit", "json please", "--model", "gpt-4o-mini", "--wait")
    assert ok.returncode == 0, ok.stderr
    jobs = json.loads(cli(stack, "jobs", "--limit", "1", "--json").stdout)
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded" and jobs[0]["result"]
    assert jobs[0]["total_latency_ms"] >= jobs[0]["latency_ms"] > 0

    (tmp_path / "a.txt").write_text("Otters hold hands while they sleep.")
    run = cli(
        stack, "batch", "run", str(tmp_path), "--prompt", "Summarise: {document}", "--model", "gpt-4o-mini"
    )
    batch_id = run.stdout.split("batch ", 1)[1].split(":", 1)[0]
    listed = json.loads(cli(stack, "batch", "list", "--json").stdout)
    assert listed[0]["id"] == batch_id
    table = cli(stack, "batch", "list")
    assert table.returncode == 0 and batch_id[:20] in table.stdout.replace("\n", "")
    for _ in range(300):
        status = json.loads(cli(stack, "batch", "status", batch_id, "--json").stdout)
        if status["status"] == "completed":
            break
    assert status["counts"]["succeeded"] == 1
    rows = json.loads(cli(stack, "batch", "results", batch_id, "--json").stdout)
    assert [r["id"] for r in rows] == ["a.txt"] and rows[0]["status"] == "succeeded"
    both = cli(stack, "batch", "results", batch_id, "--json", "--format", "csv")
    assert both.returncode == 2 and "--json" in both.stderr
