"""What routing saves: one mixed workload run under `cost`, `balanced` and `quality`.

    python -m bench.cost [--jobs 500] [--seed 7]

The workload (seeded, identical for each strategy) mixes prompt sizes (70% short notes of
50-400 words, 25% documents of 400-3,000, 5% long reports of 3,000-8,000) and per-job
quality floors as a product would set them (40% none, 30% >= 55, 20% >= 70, 10% >= 85).
Every job runs through the real pipeline (API, dispatcher, provider workers, official SDKs,
emulator at 20 ms), and the reported cost is the sum of what Postgres recorded. Each job's
floor is checked against the catalog quality of the model that served it.
Target: `cost` and `balanced` each cost at most 50% of always-`quality`.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from decimal import Decimal
from typing import Any

from bench.stack import BenchStack, WorkerSpec
from routing.catalog import get_catalog
from workers.queues import ALL_PROVIDER_QUEUES

STRATEGIES = ("cost", "balanced", "quality")
SIZES = ((0.70, 50, 400), (0.25, 400, 3000), (0.05, 3000, 8000))  # (share, min words, max words)
FLOORS = ((0.40, None), (0.30, 55.0), (0.20, 70.0), (0.10, 85.0))  # (share, min_quality)
WORDS = [
    "queue",
    "routing",
    "provider",
    "latency",
    "invoice",
    "contract",
    "summary",
    "customer",
    "shipment",
    "policy",
    "revenue",
    "quarter",
    "region",
    "budget",
    "forecast",
    "incident",
    "report",
    "meeting",
    "analysis",
    "review",
]


def pick(rng: random.Random, table: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
    draw, acc = rng.random(), 0.0
    for row in table:
        acc += row[0]
        if draw < acc:
            return row
    return table[-1]


def workload(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    jobs = []
    for i in range(n):
        _, low, high = pick(rng, SIZES)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))
        _, floor = pick(rng, FLOORS)
        body: dict[str, Any] = {
            "messages": [{"role": "user", "content": f"Summarise #{i}: {text}"}],
            "max_tokens": rng.choice((128, 256, 512, 1024)),
        }
        if floor is not None:
            body["min_quality"] = floor
        jobs.append(body)
    return jobs


def run(jobs: int, seed: int) -> dict[str, dict[str, Any]]:
    bodies = workload(jobs, seed)
    quality = {m.id: m.quality for m in get_catalog().models.values()}
    results: dict[str, dict[str, Any]] = {}
    with BenchStack([WorkerSpec("dispatch", 8), WorkerSpec(",".join(ALL_PROVIDER_QUEUES), 32)]) as stack:
        stack.configure_emulator({"*": {"latency_ms": 20}})
        for strategy in STRATEGIES:
            ids = stack.submit_all([{**b, "strategy": strategy} for b in bodies])
            counts = stack.wait_until_done(ids)
            rows = stack.sql(
                "SELECT model, cost_usd, routing->>'min_quality' FROM jobs WHERE id = ANY(%s)", ids
            )
            unmet = [(m, f) for m, _, f in rows if f is not None and (m is None or quality[m] < float(f))]
            results[strategy] = {
                "statuses": counts,
                "cost": sum((Decimal(c) for _, c, _ in rows), Decimal(0)),
                "floors_checked": sum(1 for *_, f in rows if f is not None),
                "floors_unmet": unmet,
                "mix": Counter(m for m, _, _ in rows).most_common(4),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    results = run(args.jobs, args.seed)
    baseline = results["quality"]["cost"]
    for strategy, r in results.items():
        share = r["cost"] / baseline if baseline else Decimal(0)
        print(
            f"{strategy:>8}: ${r['cost']:.4f} ({share:.1%} of quality) statuses {r['statuses']}; "
            f"floors met {r['floors_checked'] - len(r['floors_unmet'])}/{r['floors_checked']}; "
            f"top models {r['mix']}"
        )
    ok = all(results[s]["cost"] <= baseline / 2 for s in ("cost", "balanced"))
    floors_ok = not any(r["floors_unmet"] for r in results.values())
    print(
        f"target: cost and balanced <= 50% of quality -> {'met' if ok else 'MISSED'}; "
        f"every floor met -> {'yes' if floors_ok else 'NO'}"
    )


if __name__ == "__main__":
    main()
