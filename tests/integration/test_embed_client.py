"""`Client.embed` and `llmqueue embed FILES` against the real stack: the vectors are the
emulator's, in order; the CLI writes every chunk with its document and offsets, as JSONL and
as a NumPy matrix, and says what each document cost."""

from __future__ import annotations

import json
import struct
from decimal import Decimal
from pathlib import Path

from emulator.embeddings import embed as emulator_vector
from llmqueue.client import Client
from llmqueue.demo_files import sample_documents
from routing.chunking import chunk_text
from tests.embedding_support import close
from tests.integration.conftest import Stack
from tests.integration.test_cli import cli

EXAMPLES = sample_documents()


def test_client_embed_returns_the_vectors_in_order(stack: Stack) -> None:
    texts = [f"note {i}: the kettle sings at dawn" for i in range(130)]
    with Client(base_url=stack.api_url, api_key=stack.key) as client:
        vectors = client.embed(texts, model="embed-english-v3.0", input_type="search_query")
        answer = client.embeddings("one more", model="gemini-embedding-001", dimensions=768)
    assert len(vectors) == 130
    for i in (0, 95, 96, 129):
        assert close(vectors[i], emulator_vector(texts[i], 1024))
    assert close(answer["data"][0]["embedding"], emulator_vector("one more", 768))
    assert answer["llmqueue"]["calls"] == 1 and Decimal(answer["llmqueue"]["cost_usd"]) > 0
    assert len([c for c in stack.emulator.calls() if c["kind"] == "embed"]) == 3  # 96 + 34, then 1


def test_cli_embed_writes_chunks_and_vectors_with_costs(stack: Stack, tmp_path: Path) -> None:
    out, npy = tmp_path / "chunks.jsonl", tmp_path / "chunks.npy"
    result = cli(
        stack,
        "embed",
        str(EXAMPLES),
        "--model",
        "text-embedding-3-small",
        "--chunk-tokens",
        "120",
        "--overlap",
        "20",
        "--dimensions",
        "32",
        "--out",
        str(out),
        "--npy",
        str(npy),
        "--include-text",
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sources = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".txt", ".md"))
    expected = [(p.name, chunk_text(p.read_text(), 120, 20)) for p in sources]
    n_chunks = sum(len(chunks) for _, chunks in expected)
    assert f"{len(sources)} documents -> {n_chunks} chunks" in result.stdout
    assert "1 provider calls to text-embedding-3-small" in result.stdout
    assert "documents" in result.stdout and "lighthouse-keepers.txt" in result.stdout

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["document"], r["chunk"]) for r in rows] == [
        (name, i) for name, chunks in expected for i in range(len(chunks))
    ]
    for row in rows:
        assert row["text"] == (EXAMPLES / row["document"]).read_text()[row["start"] : row["end"]]
        assert close(row["embedding"], emulator_vector(row["text"], 32))
    with Client(base_url=stack.api_url, api_key=stack.key) as client:
        batch_id = client.batches(limit=1)[0]["id"]
    table = cli(stack, "batch", "results", batch_id)  # an embed-mode batch: its documents and their cost
    assert table.returncode == 0, table.stderr
    assert "tea-history.txt" in table.stdout and "chunks" in table.stdout and "succeeded" in table.stdout
    data = npy.read_bytes()
    header_len = struct.unpack("<H", data[8:10])[0]
    assert f"'shape': ({n_chunks}, 32)" in data[10 : 10 + header_len].decode("latin1")
    last = data[-32 * 4 :]
    assert close(list(struct.unpack("<32f", last)), rows[-1]["embedding"])


def test_cli_embed_with_a_chat_model_names_the_fix(stack: Stack) -> None:
    result = cli(stack, "embed", str(EXAMPLES), "--model", "gpt-4o-mini")
    assert result.returncode == 1
    assert "chat model" in result.stderr and "text-embedding-3-small" in result.stderr
