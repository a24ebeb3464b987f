"""The story `llmqueue demo` tells, and the tables that tell it.

The demo's batch is routed by `balanced` over the demo catalog (`demo_catalog.toml`: six chat
models of five providers, the cheap deployments with a stated rpm). This module owns what
makes the story happen and what shows it:

- the emulator's setup (`emulator_config`): every model answers after the emulated latency,
  each rate-limited deployment's model is limited by the emulator to the catalog's rpm too (a
  call sent too early would get a 429), and one provider (`FAILING_PROVIDER`) starts failing
  with 503s after its first `FAIL_AFTER_CALLS` calls;
- what the run showed, read back from the API (each job's attempts and routing explanation)
  and from the emulator's call log: which provider and model served each document and why,
  the failovers, how the rate-limited deployment's calls were spaced and how many 429s came
  back, and what the same batch would have cost under other strategies.

The cost comparison prices each document's recorded token usage at the list prices of the
model another strategy would have chosen first (`POST /v1/route/preview`), so it is an
estimate for the other strategies and the recorded cost for the strategy that ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from core.errors import FAILOVER_PREFIX
from llmqueue.cli_jobs import usd, words
from routing.catalog import Catalog
from routing.costs import estimate_cost
from routing.documents import fill

STRATEGY = "balanced"
MAX_TOKENS = 200
FAILING_PROVIDER = "gemini"
FAIL_AFTER_CALLS = 2
# The strategies the closing table compares with the one that ran, and what each is called.
COMPARED = {"cost": "cost (cheapest first)", "quality": "always premium (quality first)"}
PREMIUM = "quality"  # always premium: every document on the model `quality` ranks first


def emulator_config(catalog: Catalog, latency_ms: float) -> dict[str, Any]:
    """The emulator's scopes for the story: latency everywhere, each rate-limited deployment's
    rpm on its model, and the failing provider's models failing after `FAIL_AFTER_CALLS`."""
    scopes: dict[str, dict[str, Any]] = {"*": {"latency_ms": latency_ms}}
    for deployment in catalog.deployments.values():
        scope: dict[str, Any] = {"latency_ms": latency_ms}
        if deployment.spec.rpm:
            scope["rpm"] = deployment.spec.rpm
        if deployment.provider == FAILING_PROVIDER:
            scope["outage_after"] = FAIL_AFTER_CALLS
        if len(scope) > 1:
            scopes[deployment.spec.provider_model or deployment.model.id] = scope
    return {"scopes": scopes}


def paced_deployments(catalog: Catalog) -> dict[str, int]:
    """The chat deployments with a stated rpm, by name."""
    return {d.name: d.spec.rpm for d in catalog.deployments.values() if d.spec.rpm}


@dataclass(frozen=True)
class Served:
    """One document of the batch as the run served it."""

    document: str
    status: str
    provider: str | None
    model: str | None
    deployment: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    answer: str | None
    failed_over_from: tuple[str, ...]  # providers it failed over from, in order
    spill_note: str | None  # why the first choice did not take it, if it did not

    @classmethod
    def of(cls, row: Mapping[str, Any], job: Mapping[str, Any]) -> Served:
        attempts = sorted(job.get("attempts") or [], key=lambda a: a["number"])
        failed_over = tuple(
            a["provider"]
            for a in attempts
            if a.get("error") and str(a["error"].get("type", "")).startswith(FAILOVER_PREFIX)
        )
        explanation = job.get("explanation") or {}
        return cls(
            document=str(row["id"]),
            status=row["status"],
            provider=row["provider"],
            model=row["model"],
            deployment=job.get("deployment"),
            input_tokens=int(row["input_tokens"] or 0),
            output_tokens=int(row["output_tokens"] or 0),
            cost_usd=Decimal(str(row["cost_usd"] or 0)),
            answer=row["result"] or (row.get("error") or {}).get("message"),
            failed_over_from=failed_over,
            spill_note=_spill_note(explanation),
        )

    def how(self) -> str:
        """How routing got it there, in a few words."""
        if self.failed_over_from:
            return ", ".join(f"failover from {p}" for p in self.failed_over_from)
        return "spilled (rpm)" if self.spill_note else "first choice"


def _spill_note(explanation: Mapping[str, Any]) -> str | None:
    note = explanation.get("capacity")
    return note if isinstance(note, str) and "saturated" in note else None


def results_table(served: Sequence[Served], first_choice: str | None, width: int) -> Table:
    """One row per document; the answers too on a console at least 140 columns wide."""
    title = f"the batch, routed by {STRATEGY}" + (f" (first choice: {first_choice})" if first_choice else "")
    table = Table(title=title)
    table.add_column("document", no_wrap=True, min_width=max((len(s.document) for s in served), default=8))
    table.add_column("served by", no_wrap=True)
    table.add_column("how it got there", no_wrap=True)
    table.add_column("tokens", no_wrap=True, justify="right")
    table.add_column("cost", no_wrap=True, justify="right", min_width=9)
    answers = width >= 140
    if answers:
        table.add_column("answer", overflow="ellipsis", no_wrap=True, max_width=40)
    for s in served:
        how = s.how()
        row = [
            escape(s.document),
            (s.deployment or "-") if s.status == "succeeded" else f"[red]{s.status}[/red]",
            f"[yellow]{how}[/yellow]" if how.startswith("failover") else how,
            f"{s.input_tokens}/{s.output_tokens}",
            usd(s.cost_usd),
        ]
        table.add_row(*row, *([words(s.answer, 12) if s.answer else ""] if answers else []))
    return table


def ranking_line(preview: Mapping[str, Any]) -> str:
    """Balanced's ranking for a document of the batch, before anything ran."""
    ranked = ", ".join(
        f"{c['deployment']} {float(c['score']):.2f}" for c in (preview.get("candidates") or [])[:4]
    )
    return f"{STRATEGY} ranks (0.6 cost + 0.4 quality): {ranked}, ...; one at its rate limit passes a job on"


def routing_line(served: Sequence[Served]) -> str:
    by_provider = Counter(s.provider for s in served if s.provider and s.status == "succeeded")
    spread = ", ".join(f"{p} {n}" for p, n in by_provider.most_common())
    return f"routing: {len(served)} documents over {len(by_provider)} providers ({spread})"


def failover_line(served: Sequence[Served]) -> str:
    moved = [s for s in served if s.failed_over_from]
    if not moved:
        return f"failovers: 0 ({FAILING_PROVIDER} had no job in flight when it failed)"
    landed = ", ".join(f"{p} {n}" for p, n in Counter(s.provider or "none" for s in moved).most_common())
    lost = sum(1 for s in moved if s.status != "succeeded")
    return (
        f"failovers: {sum(len(s.failed_over_from) for s in moved)} — {FAILING_PROVIDER} failed part-way "
        f"(503) and {len(moved)} of its documents were answered by {landed} instead; {lost} lost"
    )


def pacing_lines(calls: Sequence[Mapping[str, Any]], catalog: Catalog) -> list[str]:
    """For each rate-limited deployment that was called: when its calls reached the provider,
    and how many got a 429."""
    lines = []
    for name, rpm in paced_deployments(catalog).items():
        deployment = catalog.deployments[name]
        model = deployment.spec.provider_model or deployment.model.id
        mine = sorted((float(c["t"]), int(c["status"])) for c in calls if c["model"] == model)
        if not mine or deployment.provider == FAILING_PROVIDER:
            continue
        at = ", ".join(f"{t - mine[0][0]:.1f}" for t, _ in mine)
        refused = sum(1 for _, status in mine if status == 429)
        lines.append(
            f"paced: {name}, {rpm} requests a minute (one per {60 / rpm:.1f} s): {len(mine)} calls "
            f"at {at} s; 429s: {refused}"
        )
    total = sum(1 for c in calls if c["status"] == 429)
    lines.append(
        f"rate limits: {total} of {len(calls)} provider calls got a 429 (the emulator enforces each rpm)"
    )
    return lines


def priced(catalog: Catalog, model_id: str, served: Sequence[Served]) -> Decimal:
    """This run's recorded tokens, every document's, at `model_id`'s list prices."""
    model = catalog.models[model_id]
    total = sum((estimate_cost(model, s.input_tokens, s.output_tokens) for s in served), Decimal(0))
    return total.quantize(Decimal("0.000001"))


def cost_table(catalog: Catalog, served: Sequence[Served], first_choices: Mapping[str, str]) -> Table:
    """What the batch cost by `balanced` (recorded) against the same tokens at the model each
    compared strategy would pick first; the last column is each against always-premium."""
    models = Counter(s.model for s in served if s.model)
    rows: list[tuple[str, str, Decimal, str]] = [
        (
            f"{STRATEGY} (this run)",
            f"{len(models)} models, as above",
            sum((s.cost_usd for s in served), Decimal(0)),
            "recorded",
        )
    ]
    for strategy, label in COMPARED.items():
        model_id = first_choices.get(strategy)
        if model_id in catalog.models:
            rows.append((label, f"{model_id} x{len(served)}", priced(catalog, model_id, served), "estimated"))
    premium_label = COMPARED[PREMIUM]
    premium = next((cost for label, _, cost, _ in rows if label == premium_label), Decimal(0))
    table = Table(
        title="what this batch cost, per strategy",
        caption="recorded: what this run cost. estimated: each document's recorded tokens at the list "
        "price of the model that strategy ranks first",
    )
    for column in ("strategy", "models", "cost", "", "against always premium"):
        table.add_column(column, justify="right" if column in ("cost", "against always premium") else "left")
    for label, used, cost, kind in rows:
        against = f"{cost / premium:.1%} of its cost" if premium and label != premium_label else "-"
        table.add_row(label, used, usd(cost), kind, against)
    return table


def setup_lines(catalog: Catalog) -> list[str]:
    """What the demo set up, said before it runs."""
    limited = ", ".join(f"{name} {rpm}" for name, rpm in paced_deployments(catalog).items())
    lines = [
        f"catalog: {catalog.source} ({len(catalog.models)} models of {len(catalog.providers())} providers)",
        f"rate limits (requests a minute): {limited}; the emulator answers 429 past them"
        if limited
        else "rate limits: none stated in this catalog (no deployment sets rpm)",
    ]
    failing = sorted(d.name for d in catalog.deployments.values() if d.provider == FAILING_PROVIDER)
    if failing:
        lines.append(
            f"[bold red]fault injected:[/bold red] the emulator will answer {FAILING_PROVIDER} "
            f"({', '.join(failing)}) for its first {FAIL_AFTER_CALLS} calls, then fail every call "
            "with 503 service unavailable"
        )
    return lines


def previews(client: Any, document: Path, prompt: str) -> dict[str, dict[str, Any]]:
    """How each strategy (the one that runs and those compared) would route a document of the
    batch now, before anything ran (`POST /v1/route/preview`)."""
    text = fill(prompt, document.read_text(encoding="utf-8"))
    return {
        strategy: client.route_preview(text, strategy=strategy, max_tokens=MAX_TOKENS)
        for strategy in (STRATEGY, *COMPARED)
    }


def first_model(preview: Mapping[str, Any]) -> str | None:
    chosen = preview.get("chosen")
    return str(chosen["model"]) if chosen else None
