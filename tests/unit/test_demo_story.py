"""The demo's story (`llmqueue/demo_story.py`) from made-up records: the emulator's setup
from the demo catalog, how a document's route is told from its job, the pacing and the cost
arithmetic. Pure, instant; `test_demo_files.py` runs the real demo once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Console

from llmqueue import demo_story as story
from llmqueue.demo_files import demo_catalog
from routing.catalog import Catalog, load_catalog


def catalog() -> Catalog:
    return load_catalog(str(demo_catalog()))


def row(doc: str, provider: str, model: str, cost: str) -> dict[str, Any]:
    return {
        "id": doc,
        "job_id": f"job-{doc}",
        "status": "succeeded",
        "provider": provider,
        "model": model,
        "input_tokens": 1000,
        "output_tokens": 100,
        "cost_usd": cost,
        "latency_ms": 400.0,
        "result": "an answer",
        "error": None,
    }


def attempt(number: int, provider: str, deployment: str, error: str | None) -> dict[str, Any]:
    return {
        "number": number,
        "provider": provider,
        "deployment": deployment,
        "error": {"type": error, "message": "emulated outage"} if error else None,
    }


def test_the_emulator_is_given_the_catalogs_limits_and_the_fault() -> None:
    scopes = story.emulator_config(catalog(), 250)["scopes"]
    assert scopes["*"] == {"latency_ms": 250}
    assert scopes["gpt-4o-mini"] == {"latency_ms": 250, "rpm": 12}
    assert scopes["gemini-2.5-flash-lite"]["outage_after"] == story.FAIL_AFTER_CALLS
    assert "claude-sonnet-4-6" not in scopes  # no limit, no fault: the "*" scope serves it
    assert story.paced_deployments(catalog())["openai/gpt-4o-mini"] == 12


def test_each_documents_route_is_told_from_its_job() -> None:
    spilled = story.Served.of(
        row("a.txt", "mistral", "mistral-small-latest", "0.00013"),
        {
            "deployment": "mistral/mistral-small",
            "attempts": [attempt(1, "mistral", "mistral/mistral-small", None)],
            "explanation": {"capacity": "capacity: first choice openai/gpt-4o-mini is saturated (...)"},
        },
    )
    moved = story.Served.of(
        row("b.txt", "openai", "gpt-4o-mini", "0.00021"),
        {
            "deployment": "openai/gpt-4o-mini",
            "attempts": [
                attempt(1, "gemini", "gemini/gemini-2.5-flash-lite", "transient"),
                attempt(2, "gemini", "gemini/gemini-2.5-flash-lite", "failover:transient"),
                attempt(3, "openai", "openai/gpt-4o-mini", None),
            ],
            "explanation": {},
        },
    )
    first = story.Served.of(row("c.txt", "openai", "gpt-4o-mini", "0.00021"), {"attempts": []})
    assert (spilled.how(), moved.how(), first.how()) == (
        "spilled (rpm)",
        "failover from gemini",
        "first choice",
    )
    served = [spilled, moved, first]
    assert story.routing_line(served) == "routing: 3 documents over 2 providers (openai 2, mistral 1)"
    assert story.failover_line(served).startswith("failovers: 1 — gemini failed part-way (503)")
    assert story.failover_line(served).endswith("answered by openai 1 instead; 0 lost")
    out = Console(width=160, record=True)
    out.print(story.results_table(served, "openai/gpt-4o-mini", 160))
    text = out.export_text()
    assert "first choice: openai/gpt-4o-mini" in text and "an answer" in text  # answers from 140 columns


def test_pacing_is_read_from_the_emulators_call_log() -> None:
    calls = [
        {"t": 100.0 + t, "model": "gpt-4o-mini", "status": 200, "kind": "chat"} for t in (0.0, 5.1, 10.2)
    ] + [{"t": 101.0, "model": "mistral-small-latest", "status": 429, "kind": "chat"}]
    lines = story.pacing_lines(calls, catalog())
    assert lines[0] == (
        "paced: openai/gpt-4o-mini, 12 requests a minute (one per 5.0 s): "
        "3 calls at 0.0, 5.1, 10.2 s; 429s: 0"
    )
    assert lines[1].endswith("1 calls at 0.0 s; 429s: 1")
    assert lines[-1].startswith("rate limits: 1 of 4 provider calls got a 429")


def test_the_cost_table_prices_the_recorded_tokens() -> None:
    served = [story.Served.of(row(d, "openai", "gpt-4o-mini", "0.00021"), {}) for d in ("a", "b")]
    # 2 x (1000 in x $3 + 100 out x $15 per million) at claude-sonnet-4-6's list prices
    assert story.priced(catalog(), "claude-sonnet-4-6", served) == Decimal("0.009000")
    out = Console(width=160, record=True)
    out.print(story.cost_table(catalog(), served, {"quality": "claude-sonnet-4-6"}))
    text = out.export_text()
    assert "$0.000420" in text and "$0.009000" in text and "4.7% of its cost" in text
