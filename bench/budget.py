"""Budgets under load on a whole stack: what is spent against what was allowed.

    python -m bench.budget race  [--jobs 600] [--limit 1] [--submitters 50] [--text records|prose]
    python -m bench.budget batch [--lines 50000] [--paid 1000]

`race`: a key with a $1 budget; jobs of varied size (10 to 400 records of input, `max_tokens`
from none to 4,096) submitted over HTTP by 50 threads at once, to a stack whose dispatcher and
provider worker each hold 50 in flight and whose emulator answers in 150 ms, so calls are in
flight while others reserve. `--text prose` sends English prose instead: the emulator counts
four characters a token, more than llmqueue's estimate of prose, so a call's input can cost
more than its reservation (see tests/integration/test_ledger_race.py).

`batch`: one OpenAI-style batch of `--lines` lines (through the official `openai` SDK) on a
key whose budget covers about `--paid` of them at their real cost.

Both print the figures read from Postgres: spent (the budget row) against the limit and the
sum of the attempts' costs, what stays reserved, jobs by status and error, refusals at intake,
the emulator's call count and the wall time. Runs its own stack (`bench/stack.py`).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import openai

from bench.stack import BenchStack, WorkerSpec

RACE_MODEL = "claude-sonnet-4-6"
BATCH_MODEL = "gpt-4.1"
PROSE = "The committee reviewed the quarterly budget report and asked for a shorter summary. "
MAX_TOKENS = (None, 16, 64, 256, 1024, 4096)
BATCH_LINE_USD = Decimal("0.000212")  # one batch line's real cost at the emulator (measured)


def prompt(rng: random.Random, i: int, text: str) -> str:
    if text == "prose":
        return f"Job {i}. " + PROSE * rng.randint(10, 400)
    rows = (
        json.dumps(
            {"order": f"ord-{rng.randint(10000, 99999)}", "qty": rng.randint(1, 50), "usd": rng.random()}
        )
        for _ in range(rng.randint(10, 400))
    )
    return f"Job {i}: total these orders by quantity.\n" + "\n".join(rows)


def emulator_calls(stack: BenchStack) -> dict[str, int]:
    """The calls the emulator answered, by kind and model (and status when not 200)."""
    rows = httpx.get(f"{stack.emulator_url}/_emulator/calls", timeout=60).json()
    return dict(Counter(f"{c.get('kind')} {c.get('model')} {c.get('status', '')}".strip() for c in rows))


def key_id(stack: BenchStack) -> str:
    found: str = stack.client.get("/v1/keys/self").json()["id"]
    return found


def set_budget(stack: BenchStack, limit: Decimal) -> None:
    stack._cli("keys", "set-budget", key_id(stack), "--limit", str(limit))


def ledger_figures(stack: BenchStack, owner: str) -> dict[str, Any]:
    [(limit, spent, reserved)] = stack.sql(
        "SELECT limit_usd, spent_usd, reserved_usd FROM budgets WHERE owner_id = %s AND batch_id IS NULL",
        owner,
    )
    [(attempts,)] = stack.sql(
        "SELECT coalesce(sum(a.cost_usd), 0) FROM attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.owner_id = %s",
        owner,
    )
    [(over_reservation,)] = stack.sql(
        "SELECT count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.owner_id = %s AND a.cost_usd > a.reserved_usd",
        owner,
    )
    statuses = Counter(
        {
            f"{s}/{e}" if e else str(s): int(n)
            for s, e, n in stack.sql(
                "SELECT status, error_type, count(*) FROM jobs WHERE owner_id = %s GROUP BY 1, 2", owner
            )
        }
    )
    attempts_by = {
        f"{s}/{e}" if e else str(s): int(n)
        for s, e, n in stack.sql(
            "SELECT a.status, a.error_type, count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id "
            "WHERE j.owner_id = %s GROUP BY 1, 2",
            owner,
        )
    }
    return {
        "limit_usd": Decimal(limit),
        "spent_usd": Decimal(spent),
        "attempt_costs_usd": Decimal(attempts),
        "ledger_minus_attempts_usd": Decimal(spent) - Decimal(attempts),
        "overspend_usd": max(Decimal(0), Decimal(spent) - Decimal(limit)),
        "reserved_left_usd": Decimal(reserved),
        "attempts_costing_more_than_reserved": int(over_reservation),
        "jobs": dict(statuses),
        "attempts": attempts_by,
    }


def race(args: argparse.Namespace) -> dict[str, Any]:
    workers = [WorkerSpec("dispatch", 50), WorkerSpec("provider.anthropic", 50)]
    with BenchStack(workers) as stack:
        stack.configure_emulator({RACE_MODEL: {"latency_ms": 150}})
        set_budget(stack, Decimal(args.limit))
        rng = random.Random(args.seed)
        bodies = [
            {
                "messages": [{"role": "user", "content": prompt(rng, i, args.text)}],
                "model": RACE_MODEL,
                **({"max_tokens": m} if (m := rng.choice(MAX_TOKENS)) else {}),
            }
            for i in range(args.jobs)
        ]
        refused: Counter[str] = Counter()
        ids: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(args.submitters)
        began = time.monotonic()

        def submit(chunk: list[dict[str, Any]]) -> None:
            start.wait()
            for body in chunk:
                r = stack.client.post("/v1/jobs", json=body)
                for _ in range(5):  # a 503 (the API's pool was busy) is retried, as the SDKs do
                    if r.status_code != 503:
                        break
                    with lock:
                        refused["503, retried"] += 1
                    time.sleep(float(r.headers.get("retry-after", "1")))
                    r = stack.client.post("/v1/jobs", json=body)
                with lock:
                    if r.status_code == 202:
                        ids.append(r.json()["id"])
                    else:
                        refused[f"{r.status_code} {r.json()['error'].get('code')}"] += 1

        with ThreadPoolExecutor(args.submitters) as pool:
            list(pool.map(submit, [bodies[i :: args.submitters] for i in range(args.submitters)]))
        stack.wait_until_done(ids, timeout=600)
        wall = time.monotonic() - began
        calls = emulator_calls(stack)
        return {
            "scenario": f"race: {args.jobs} jobs ({args.text}), {args.submitters} threads, ${args.limit}",
            **ledger_figures(stack, key_id(stack)),
            "refused_at_intake": dict(refused),
            "emulator_calls": calls,
            "wall_s": round(wall, 1),
        }


def batch(args: argparse.Namespace) -> dict[str, Any]:
    limit = (BATCH_LINE_USD * args.paid).quantize(Decimal("0.00000001"))
    workers = [WorkerSpec("dispatch", 50), WorkerSpec("provider.openai", 200)]
    with BenchStack(workers) as stack:
        set_budget(stack, limit)
        client = openai.OpenAI(base_url=stack.api_url + "/v1", api_key=stack.key, max_retries=2, timeout=600)
        lines = "".join(
            json.dumps(
                {
                    "custom_id": f"l{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": BATCH_MODEL,
                        "messages": [
                            {"role": "user", "content": f"Line {i:05d}: give the capital of France."}
                        ],
                        "max_tokens": 24,
                    },
                }
            )
            + "\n"
            for i in range(args.lines)
        ).encode()
        began = time.monotonic()
        file_id = client.files.create(file=("lines.jsonl", io.BytesIO(lines)), purpose="batch").id
        created = client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        accepted = time.monotonic() - began
        while (done := client.batches.retrieve(created.id)).status not in ("completed", "failed", "expired"):
            time.sleep(2)
        wall = time.monotonic() - began
        errors: Counter[str] = Counter()
        if done.error_file_id:
            for line in client.files.content(done.error_file_id).text.splitlines():
                errors[json.loads(line)["error"]["code"]] += 1
        outputs = (
            len(client.files.content(done.output_file_id).text.splitlines()) if done.output_file_id else 0
        )
        calls = emulator_calls(stack)
        return {
            "scenario": f"batch: {args.lines} lines, a key budget for about {args.paid}",
            **ledger_figures(stack, key_id(stack)),
            "batch_status": done.status,
            "output_lines": outputs,
            "error_lines": dict(errors),
            "emulator_calls": calls,
            "accepted_s": round(accepted, 1),
            "wall_s": round(wall, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    r = sub.add_parser("race")
    r.add_argument("--jobs", type=int, default=600)
    r.add_argument("--limit", default="1")
    r.add_argument("--submitters", type=int, default=50)
    r.add_argument("--text", choices=("records", "prose"), default="records")
    r.add_argument("--seed", type=int, default=12)
    b = sub.add_parser("batch")
    b.add_argument("--lines", type=int, default=50_000)
    b.add_argument("--paid", type=int, default=1_000)
    args = parser.parse_args()
    figures = race(args) if args.scenario == "race" else batch(args)
    for name, value in figures.items():
        print(f"{name:>38}: {value}")


if __name__ == "__main__":
    main()
