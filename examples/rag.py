"""Retrieval-augmented generation end to end through llmqueue, offline on the provider emulator.

    python examples/rag.py "How do I keep a sourdough starter alive?"
    python examples/rag.py --api-url http://127.0.0.1:8000 --api-key lq_... "Who trimmed the wicks?"

1. Embed the sample documents (`llmqueue/examples/`, shipped with the package): one document
   batch in embed mode (chunks of `--chunk-tokens` tokens overlapping by `--overlap`), each
   chunk's vector with its document and char offsets, in as few provider calls as the model
   takes.
2. Embed the question (`input_type=search_query`) and rank the chunks by cosine similarity
   (plain Python: a few dozen vectors need no index).
3. Answer with a chat job given the best chunks, each labelled `[document#chunk]`, and told to
   cite them.

It prints the sources with their scores, the answer, and what each step cost (`--json`: the
same as one JSON object). Without `--api-url` the whole stack runs embedded, as `llmqueue demo`
does: SQLite, a real Celery worker process, the API on a thread and the built-in emulator
answering every call (its vectors are hashed words: texts sharing words are close, so retrieval
works; its answers are placeholders). With provider keys set, the real providers answer.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from llmqueue.client import Client
from llmqueue.demo_files import demo_home, sample_documents

EMBEDDING_MODEL = "text-embedding-3-small"
CHAT_MODEL = "gpt-4o-mini"
SYSTEM = (
    "Answer the question from the sources only. Cite each source you use by its label, like "
    "[river-restoration.txt#1]. If the sources do not answer it, say so."
)


@dataclass(frozen=True)
class Chunk:
    document: str
    number: int
    start: int
    end: int
    text: str
    vector: list[float]

    @property
    def label(self) -> str:
        return f"{self.document}#{self.number}"


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norms if norms else 0.0


def embed_corpus(
    client: Client, documents: list[Path], chunk_tokens: int, overlap: int
) -> tuple[list[Chunk], dict[str, Any]]:
    """The documents' chunks with their vectors, and the batch (its cost)."""
    batch = client.embed_documents(
        documents,
        model=EMBEDDING_MODEL,
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap,
        input_type="search_document",
    )
    final = client.wait_batch(batch["id"], poll_s=0.2, timeout=300)
    if final["status"] != "completed" or final["counts"]["failed"]:
        raise SystemExit(f"embedding the documents failed: {final['status']}, {final['counts']}")
    chunks = [
        Chunk(row["document"], row["chunk"], row["start"], row["end"], row["text"], row["embedding"])
        for row in client.embedding_results(batch["id"], include_text=True)
    ]
    return chunks, final


def retrieve(
    client: Client, chunks: list[Chunk], question: str, top: int
) -> tuple[list[tuple[float, Chunk]], Decimal]:
    """The `top` chunks closest to the question, best first, and what embedding it cost."""
    answer = client.embeddings([question], model=EMBEDDING_MODEL, input_type="search_query")
    query = answer["data"][0]["embedding"]
    ranked = sorted(((cosine(query, c.vector), c) for c in chunks), key=lambda sc: -sc[0])
    return ranked[:top], Decimal(answer["llmqueue"]["cost_usd"])


def prompt(question: str, sources: list[tuple[float, Chunk]]) -> list[dict[str, str]]:
    context = "\n\n".join(f"[{chunk.label}]\n{chunk.text.strip()}" for _, chunk in sources)
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Question: {question}\n\nSources:\n\n{context}"},
    ]


def answer(client: Client, question: str, sources: list[tuple[float, Chunk]]) -> dict[str, Any]:
    """The chat job that answers from the sources (waited for)."""
    return client.run(prompt(question, sources), model=CHAT_MODEL, max_tokens=300, timeout=120)


def rag(client: Client, question: str, *, chunk_tokens: int, overlap: int, top: int) -> dict[str, Any]:
    documents = sorted(p for p in sample_documents().iterdir() if p.suffix in (".txt", ".md"))
    started = time.monotonic()
    chunks, batch = embed_corpus(client, documents, chunk_tokens, overlap)
    sources, query_cost = retrieve(client, chunks, question, top)
    job = answer(client, question, sources)
    return {
        "question": question,
        "documents": len(documents),
        "chunks": len(chunks),
        "embedding_calls": batch["options"]["calls"],
        "sources": [
            {"label": c.label, "score": round(score, 4), "start": c.start, "end": c.end}
            for score, c in sources
        ],
        "answer": job["result"],
        "answer_job": job["id"],
        "answered_by": f"{job['provider']}/{job['model']}",
        "cost_usd": {
            "corpus": batch["cost_usd"],
            "question": f"{query_cost:f}",
            "answer": job["cost_usd"],
            "total": f"{Decimal(batch['cost_usd']) + query_cost + Decimal(job['cost_usd']):f}",
        },
        "seconds": round(time.monotonic() - started, 2),
    }


def show(result: dict[str, Any]) -> None:
    calls = f"{result['embedding_calls']} embedding calls"
    print(f"{result['documents']} documents -> {result['chunks']} chunks in {calls}")
    print(f"\nQ: {result['question']}\n\nsources:")
    for source in result["sources"]:
        print(f"  {source['score']:.3f}  [{source['label']}]  chars {source['start']}-{source['end']}")
    print(f"\nA ({result['answered_by']}, job {result['answer_job']}):\n{result['answer']}\n")
    cost = result["cost_usd"]
    print(
        f"cost: corpus ${cost['corpus']}, question ${cost['question']}, answer ${cost['answer']}; "
        f"total ${cost['total']} ({result['seconds']} s)"
    )


@contextmanager
def embedded_stack(latency_ms: float) -> Iterator[Client]:
    """The whole stack on this machine, as `llmqueue demo` runs it (see llmqueue/demo.py)."""
    from llmqueue import demo

    with demo_home():  # the job store and broker files, removed afterwards
        emulator = demo.prepare_environment(latency_ms)
        from jobstore.db import transaction
        from jobstore.jobs import create_api_key
        from jobstore.migrate import upgrade

        try:
            upgrade()
            with transaction() as session:
                _, secret = create_api_key(session, "rag-example")
            with ExitStack() as stack:
                url = stack.enter_context(demo.api_server())
                stack.enter_context(demo.worker_process())
                yield stack.enter_context(Client(base_url=url, api_key=secret))
        finally:
            if emulator is not None:
                emulator.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="?", default="How do I keep a sourdough starter alive?")
    parser.add_argument("--api-url", help="A running llmqueue API (else the stack runs embedded).")
    parser.add_argument("--api-key", help="Its key (else LLMQUEUE_API_KEY).")
    parser.add_argument("--chunk-tokens", type=int, default=80)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--top", type=int, default=3, help="How many chunks the answer is given.")
    parser.add_argument("--latency-ms", type=float, default=50, help="Embedded: the emulator's latency.")
    parser.add_argument("--json", action="store_true", help="Print the result as one JSON object.")
    args = parser.parse_args(argv)
    options = {"chunk_tokens": args.chunk_tokens, "overlap": args.overlap, "top": args.top}
    if args.api_url:
        with Client(base_url=args.api_url, api_key=args.api_key) as client:
            result = rag(client, args.question, **options)
    else:
        with embedded_stack(args.latency_ms) as client:
            result = rag(client, args.question, **options)
    if args.json:
        print(json.dumps(result))
    else:
        show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
