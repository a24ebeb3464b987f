"""examples/rag.py run as a user runs it, against the real stack: the sample documents are
embedded, the chunks closest to the question come from the document that answers it, and the
answer is a chat job given those chunks, labelled for citation."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmqueue.demo_files import sample_documents
from tests.integration.conftest import Stack

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "rag.py"


def run_example(stack: Stack, question: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--api-url", stack.api_url, "--api-key", stack.key, "--json", question],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_rag_example_retrieves_the_right_document_and_answers_citing_it(stack: Stack) -> None:
    result = run_example(stack, "Who trimmed the wicks of the lighthouse lamp through the night?")
    documents = len([p for p in sample_documents().iterdir() if p.is_file()])
    assert result["documents"] == documents and result["chunks"] >= 2 * documents
    assert result["embedding_calls"] == 1
    labels = [s["label"] for s in result["sources"]]
    assert labels[0].startswith("lighthouse-keepers.txt#")
    scores = [s["score"] for s in result["sources"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]

    request = stack.client.get(f"/v1/jobs/{result['answer_job']}/request").json()["request"]
    system, user = request["messages"]
    assert "Cite each source" in system["content"]
    for label in labels:  # every retrieved chunk went to the answer, under its label
        assert f"[{label}]" in user["content"]
    job = stack.job(result["answer_job"])
    assert job["status"] == "succeeded" and job["kind"] == "chat" and result["answer"] == job["result"]
    costs = result["cost_usd"]
    assert Decimal(costs["total"]) == Decimal(costs["corpus"]) + Decimal(costs["question"]) + Decimal(
        costs["answer"]
    )
    assert all(Decimal(v) > 0 for v in costs.values())

    other = run_example(stack, "How often should a sourdough starter be fed with flour and water?")
    assert other["sources"][0]["label"].startswith("sourdough-starter.md#")
