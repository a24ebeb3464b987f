"""Accepting a 50,000-document batch in one request: time to accept, the API's peak memory,
and time until every job has been dispatched (and, with --complete, has ended).

    python -m bench.batch_accept [--docs 50000] [--words 60] [--complete]

Runs its own stack (`bench/stack.py`): the API, the emulator and one worker process as
subprocesses. The upload is a JSONL file streamed from disk; the API's peak RSS is its
VmHWM from /proc (Linux), read before and after the request.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from bench.stack import BenchStack, WorkerSpec

WORDS = (
    "pump",
    "valve",
    "river",
    "report",
    "quarter",
    "otter",
    "ledger",
    "signal",
    "harbour",
    "audit",
    "sensor",
    "glacier",
    "invoice",
    "turbine",
    "archive",
    "meadow",
    "contract",
    "beacon",
)


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def write_documents(path: Path, docs: int, words: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    with path.open("w") as out:
        for i in range(docs):
            text = " ".join(rng.choice(WORDS) for _ in range(words))
            out.write(json.dumps({"id": f"doc-{i}", "text": text, "metadata": {"n": i}}) + "\n")
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--words", type=int, default=60, help="words per document")
    parser.add_argument("--complete", action="store_true", help="also wait for every document to end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        upload = Path(tmp) / "docs.jsonl"
        size = write_documents(upload, args.docs, args.words)
        with BenchStack(workers=[WorkerSpec("all", 200)]) as stack:
            api_pid = stack.procs[1].pid  # spawned in order: emulator, api, workers
            before = rss_kib(api_pid, "VmRSS")
            started = time.monotonic()
            with upload.open("rb") as handle:
                r = stack.client.post(
                    "/v1/document_batches",
                    timeout=600,
                    data={"prompt": "Summarise:\n\n{document}", "model": "gpt-4o-mini"},
                    files={"jsonl": ("docs.jsonl", handle, "application/x-ndjson")},
                )
            accepted_s = time.monotonic() - started
            r.raise_for_status()
            batch = r.json()
            peak = rss_kib(api_pid, "VmHWM")
            print(f"upload: {args.docs} documents, {size / 1e6:.1f} MB of JSONL")
            print(
                f"accepted in {accepted_s:.2f} s (HTTP {r.status_code}), "
                f"batch total {batch['counts']['total']}"
            )
            print(f"API RSS before {before / 1024:.0f} MiB, peak (VmHWM) {peak / 1024:.0f} MiB")
            jobs = stack.sql("SELECT count(*) FROM jobs WHERE batch_id = %s", batch["id"])[0][0]
            print(f"jobs in Postgres: {jobs}")
            deadline = time.monotonic() + 900
            while stack.sql(
                "SELECT count(*) FROM jobs WHERE batch_id = %s AND status = 'queued'", batch["id"]
            )[0][0]:
                assert time.monotonic() < deadline, "jobs still queued after 15 min"
                time.sleep(0.5)
            print(f"every job dispatched {time.monotonic() - started:.1f} s after the upload began")
            if args.complete:
                while stack.client.get(f"/v1/document_batches/{batch['id']}").json()["status"] != "completed":
                    assert time.monotonic() < deadline, "batch not completed after 15 min"
                    time.sleep(1)
                final = stack.client.get(f"/v1/document_batches/{batch['id']}").json()
                print(
                    f"batch completed {time.monotonic() - started:.1f} s after the upload began: "
                    f"{final['counts']}, cost ${final['cost_usd']}"
                )


if __name__ == "__main__":
    main()
