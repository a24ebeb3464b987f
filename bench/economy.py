"""Economy mode end to end: one OpenAI-style batch with a 24-hour window through the whole
stack, by provider batch (the default for such a batch) and online (`delivery=online`).

    python -m bench.economy [--docs 5000] [--model gpt-4o-mini] [--completion-s 0]

The stack runs as subprocesses (`bench/stack.py`): the API, a dispatcher (which routes and
plans), a provider worker for the online calls, a provider-batch worker, and the emulator,
whose batch API finishes a batch `--completion-s` after it was created (a real provider takes
minutes to hours, at most the window). The same input file is submitted twice through the
official `openai` SDK; each run's cost is the batch's own `cost_usd` (the sum Postgres
recorded), its wall time from the create call to `completed`. The economy run's time is
split into planning (the batch's creation to its provider batches'), the provider's share
(submitted to ended: the emulator's completion time plus polling) and writing the results.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import openai

from bench.stack import BenchStack, WorkerSpec

ENDED = ("completed", "failed", "cancelled", "expired")


def input_file(docs: int, model: str) -> bytes:
    """Summarisation requests of about 300 words each, all different (as bench/provider_batch.py)."""
    lines = []
    for i in range(docs):
        text = f"Document {i}: " + " ".join(f"word{(i * 7 + j) % 997}" for j in range(300))
        body = {
            "model": model,
            "messages": [
                {"role": "system", "content": "Summarise the document in two sentences."},
                {"role": "user", "content": text},
            ],
            "max_tokens": 120,
        }
        lines.append(
            json.dumps(
                {"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
        )
    return ("\n".join(lines) + "\n").encode()


def run_batch(client: openai.OpenAI, data: bytes, **extra: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    file_id = client.files.create(file=("docs.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", extra_body=extra
    )
    while batch.status not in ENDED:
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    return batch, time.perf_counter() - started


def answered_once(client: openai.OpenAI, batch: Any, docs: int) -> bool:
    ids: list[str] = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            ids += [
                json.loads(line)["custom_id"]
                for line in client.files.content(file_id).text.splitlines()
                if line
            ]
    return sorted(ids) == sorted(f"doc-{i}" for i in range(docs))


def _span(a: object, b: object) -> float:
    return (b - a).total_seconds() if isinstance(a, datetime) and isinstance(b, datetime) else 0.0


def phases(stack: BenchStack, batch_id: str) -> dict[str, float]:
    rows = stack.sql(
        "SELECT min(pb.created_at), min(pb.submitted_at), max(pb.ended_at), max(pb.settled_at), "
        "min(b.created_at) FROM provider_batches pb JOIN batches b ON b.id = pb.batch_id "
        "WHERE pb.batch_id = %s",
        batch_id,
    )
    created, submitted, ended, settled, batch_created = rows[0]
    if created is None:
        return {}
    return {
        "planning": _span(batch_created, created),
        "submitting": _span(created, submitted),
        "at the provider": _span(submitted, ended),
        "writing results": _span(ended, settled),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--completion-s", type=float, default=0.0)
    args = parser.parse_args()
    workers = [WorkerSpec("dispatch", 8), WorkerSpec("provider.openai", 32), WorkerSpec("provider_batch", 4)]
    env = {"LLMQUEUE_PROVIDER_BATCH_POLL_S": "0.5", "LLMQUEUE_PROVIDER_BATCH_POLL_MAX_S": "2"}
    data = input_file(args.docs, args.model)
    with BenchStack(workers, env=env) as stack:
        httpx.post(
            f"{stack.emulator_url}/_emulator/config", json={"batch": {"completion_s": args.completion_s}}
        ).raise_for_status()
        client = openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=2, timeout=300)
        economy, economy_s = run_batch(client, data)
        online, online_s = run_batch(client, data, delivery="online")
        split = phases(stack, economy.id)
        seen = (client.batches.retrieve(economy.id).model_extra or {}).get("jobs_by_path")
        ok = answered_once(client, economy, args.docs) and answered_once(client, online, args.docs)
        economy_cost = Decimal(economy.model_extra["cost_usd"])
        online_cost = Decimal(online.model_extra["cost_usd"])
    print(f"{args.docs} requests, {args.model}, 24h window, emulator completion_s={args.completion_s}")
    print(f"provider batch: ${economy_cost:.4f}  {economy_s:6.1f} s  {economy.request_counts}")
    print(f"                jobs by path {seen}")
    print("                " + ", ".join(f"{name} {s:.1f} s" for name, s in split.items()))
    print(f"online:         ${online_cost:.4f}  {online_s:6.1f} s  {online.request_counts}")
    print(f"provider batch / online: {economy_cost / online_cost:.1%} of the cost (target <= 52%)")
    print(f"every line answered once, in the output or the error file: {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
