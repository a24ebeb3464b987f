"""Where the demo's files go (`llmqueue/demo_files.py`): a temporary folder removed however
the demo ends, or a kept folder under the user's LLMQUEUE_HOME; and the sample documents
it reads by default are the package's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmqueue.demo_files import demo_home, sample_documents

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR for this test alone, so what is left in it can be counted."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    monkeypatch.delenv("LLMQUEUE_HOME", raising=False)
    return tmp


def test_the_samples_are_the_packages_own() -> None:
    assert sample_documents() == ROOT / "llmqueue" / "examples"
    assert len(list(sample_documents().glob("*.txt"))) >= 3


def test_a_temporary_home_is_removed_even_when_the_demo_fails(private_tmp: Path) -> None:
    with pytest.raises(RuntimeError), demo_home() as home:
        assert os.environ["LLMQUEUE_HOME"] == str(home) and home.parent == private_tmp
        (home / "llmqueue.db").write_text("stand-in for the job store")
        raise RuntimeError("the worker did not start")
    assert not home.exists() and list(private_tmp.iterdir()) == []
    assert "LLMQUEUE_HOME" not in os.environ


def test_under_llmqueue_home_the_run_is_kept_there(
    private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "mine"
    monkeypatch.setenv("LLMQUEUE_HOME", str(mine))
    with demo_home() as home:
        assert home.parent == mine and home.name.startswith("demo-")
        (home / "llmqueue.db").write_text("kept")
    assert (home / "llmqueue.db").read_text() == "kept"
    assert os.environ["LLMQUEUE_HOME"] == str(mine)  # restored
    assert list(private_tmp.iterdir()) == []


def run_demo(
    tmp_path: Path, timeout: float, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """`llmqueue demo` as a user runs it, from an empty folder with an empty TMPDIR and none
    of the test session's services in its environment; returns what it did and the two
    folders (to check nothing is left in them)."""
    tmp, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMQUEUE_", "CELERY_")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    done = subprocess.run(
        [sys.executable, "-m", "llmqueue.cli", "demo"],
        cwd=cwd,
        env={**clean, "TMPDIR": str(tmp), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done, tmp, cwd


def test_a_demo_that_fails_part_way_leaves_nothing(tmp_path: Path) -> None:
    """The real command, stopped by a broken catalog after its folder was made."""
    (tmp_path / "broken.toml").write_text("[[models]]\nid = 'x'\n")
    done, tmp, cwd = run_demo(tmp_path, 120, LLMQUEUE_CATALOG=str(tmp_path / "broken.toml"), COLUMNS="200")
    assert done.returncode == 2
    assert "llmqueue-demo-" in done.stdout  # it had made its folder (and said where)
    assert "broken.toml: models[0] (x): provider: Field required" in done.stderr
    assert "LLMQUEUE_CATALOG" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []


def test_the_demo_tells_the_story(tmp_path: Path) -> None:
    """The real command, from an empty folder: the batch is routed by balanced over several
    providers, the failing provider's jobs fail over and none is lost, the rate-limited
    deployments get no 429, the cost table compares strategies with always-premium, and
    nothing is left behind. About a minute (the whole demo)."""
    done, tmp, cwd = run_demo(tmp_path, 300, COLUMNS="160")
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-4000:]
    documents = len(list(sample_documents().glob("*.*")))
    routed = re.search(rf"routing: {documents} documents over (\d+) providers", out)
    assert routed and int(routed.group(1)) > 1, out[-4000:]
    assert "fault injected" in out and "then fail every call with 503" in out
    failovers = re.search(r"failovers: (\d+) — gemini failed part-way .*; 0 lost", out)
    assert failovers and int(failovers.group(1)) >= 1, out[-4000:]
    assert "failover from gemini" in out  # and the table says which documents
    assert re.search(r"paced: openai/gpt-4o-mini, 12 requests a minute .*; 429s: 0", out), out[-4000:]
    assert re.search(r"rate limits: 0 of \d+ provider calls got a 429", out)
    assert "what this batch cost, per strategy" in out
    for row in ("balanced (this run)", "cost (cheapest first)", "always premium", "claude-sonnet-4-6"):
        assert row in out, row
    assert "Traceback" not in out + done.stderr
    assert list(tmp.iterdir()) == [] and list(cwd.iterdir()) == []
