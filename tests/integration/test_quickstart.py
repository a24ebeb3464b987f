"""The README's quickstarts, run as written (`tests/quickstart.py` extracts them).

- services: the block itself starts the emulator, the API and a worker in the background,
  against a database of its own, and submits a job; ports come from the variables the
  block reads (EMULATOR_PORT, API_PORT, DATABASE_URL, REDIS_URL).
- openai and batch: against the real stack, with LLMQUEUE_API_URL and LLMQUEUE_API_KEY set
  as the services quickstart leaves them.

The demo quickstart runs in tests/packaging (it installs the package); the compose one is
checked without Docker in tests/unit/test_compose.py.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from emulator.server import free_port
from tests.conftest import PG_ADMIN_URL, TEST_DB
from tests.integration.conftest import Stack
from tests.quickstart import readme_block, readme_blocks, run_block

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "llmqueue" / "examples"


def user_env(**extra: str) -> dict[str, str]:
    """The test run's environment as a user's shell: `llmqueue` on PATH, no emulator forced."""
    env = {k: v for k, v in os.environ.items() if k not in ("LLMQUEUE_EMULATOR_MODE", "LLMQUEUE_API_KEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(COLUMNS="160", TERM="dumb", **extra)
    return env


def test_the_readme_has_the_five_quickstarts() -> None:
    blocks = readme_blocks()
    assert set(blocks) == {"demo", "services", "compose", "openai", "batch"}
    assert blocks["openai"][0] == "python" and all(blocks[n][0] == "sh" for n in blocks if n != "openai")


@pytest.fixture
def own_database() -> Iterator[str]:
    """An empty database for the services quickstart to migrate."""
    name = f"{TEST_DB}_quickstart"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_services_quickstart(own_database: str, tmp_path: Path) -> None:
    env = user_env(
        DATABASE_URL=own_database,
        EMULATOR_PORT=str(free_port()),
        API_PORT=str(free_port()),
        # Queues of its own: the suite's worker must not take this block's jobs.
        LLMQUEUE_REDIS_PREFIX=os.environ["LLMQUEUE_REDIS_PREFIX"] + "quickstart:",
    )
    env.pop("CELERY_BROKER_URL")  # the block sets REDIS_URL only, which is the broker then
    result = run_block(readme_block("services"), cwd=tmp_path, env=env, timeout=240)
    assert result.returncode == 0, result.stdout[-5000:]
    out = result.stdout
    assert "schema is at head" in out
    assert "Explain backpressure in one paragraph" in out  # the emulator echoes the prompt
    assert "in + " in out and " out tokens · $" in out  # provider/model, tokens, cost, latency


def test_openai_quickstart(stack: Stack, tmp_path: Path) -> None:
    script = tmp_path / "quickstart_openai.py"
    script.write_text(readme_block("openai"))
    env = user_env(LLMQUEUE_API_URL=stack.api_url, LLMQUEUE_API_KEY=stack.key)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answered, streamed, *_ = result.stdout.splitlines()
    assert " -> " in answered and "Explain backpressure in one sentence." in answered
    assert "Explain backpressure in one sentence." in streamed


def test_batch_quickstart(stack: Stack, tmp_path: Path) -> None:
    shutil.copytree(SAMPLES, tmp_path / "llmqueue" / "examples")  # where a checkout has them
    env = user_env(LLMQUEUE_API_URL=stack.api_url, LLMQUEUE_API_KEY=stack.key)
    result = run_block(readme_block("batch"), cwd=tmp_path, env=env, timeout=240)
    assert result.returncode == 0, result.stdout[-5000:]
    documents = sorted(p.name for p in SAMPLES.iterdir())
    assert f"{len(documents)} succeeded, 0 failed" in result.stdout
    rows = list(csv.DictReader(io.StringIO((tmp_path / "summaries.csv").read_text())))
    assert sorted(r["id"] for r in rows) == documents
    assert all(r["status"] == "succeeded" and r["result"] for r in rows)
    assert len({r["provider"] for r in rows}) >= 1
