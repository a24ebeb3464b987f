"""CLI commands for single jobs and spend: `llmqueue submit`, `llmqueue jobs`, `llmqueue costs`.

`costs` reads GET /v1/spend: cost summed from every provider call, grouped as asked
(`--by model,day`, `--by tag`, ...), a member key's own or, for an admin key, every key's.

They talk to a running API (LLMQUEUE_API_URL, default http://127.0.0.1:8000) with the key in
LLMQUEUE_API_KEY, through `llmqueue.client`. Also holds what the batch commands share: the
client factory that turns a missing key or an API error into a one-line message, and the
`--json` option with which a listing prints JSON for scripts instead of a table.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmqueue.client import Client, JobFailed, LlmqueueError, MissingApiKey

# Piped or captured output (CI logs, `make demo | tee`) gets a wide page instead of 80
# columns, so results tables are not cut to ellipses.
console = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err = Console(stderr=True)

ERROR_CHARS = 100  # a failed job's error in a table: enough for the cause, not a traceback
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
ModelOpt = Annotated[str | None, typer.Option(help="A catalog model or deployment (see GET /v1/models).")]
StrategyOpt = Annotated[
    str | None, typer.Option(help="cost, quality, balanced, performance, round_robin, manual.")
]


@contextmanager
def api_client() -> Iterator[Client]:
    """A client for the configured API; a missing key or an API error exits with its message."""
    try:
        with Client() as client:
            yield client
    except MissingApiKey:
        err.print(
            "[red]error:[/red] LLMQUEUE_API_KEY is not set. Create a key with [bold]llmqueue keys create"
            "[/bold], then export LLMQUEUE_API_KEY=<the key it prints>."
        )
        raise typer.Exit(2) from None
    except JobFailed as exc:
        err.print(f"[red]failed:[/red] {exc.message}")
        raise typer.Exit(1) from None
    except LlmqueueError as exc:
        where = f" (param: {exc.param})" if exc.param else ""
        err.print(f"[red]error:[/red] {exc.message}{where}")
        raise typer.Exit(1) from None


def print_json(value: Any) -> None:
    """JSON on stdout, unwrapped and uncoloured, for scripts (`| jq`)."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def words(text: str | None, n: int = 12) -> str:
    """The first n words, escaped: an answer's "[...]" is text, not rich markup."""
    parts = (text or "").split()
    return escape(" ".join(parts[:n]) + (" ..." if len(parts) > n else ""))


def usd(value: Any) -> str:
    return f"${Decimal(str(value or 0)):.6f}"


def submit(
    prompt: Annotated[str, typer.Argument(help="The prompt (one user message).")],
    model: ModelOpt = None,
    strategy: StrategyOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on the answer's tokens.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait and print the answer.")] = False,
    stream: Annotated[bool, typer.Option(help="Print the answer as it is generated.")] = False,
) -> None:
    """Submit one job. Prints its id, or with --wait/--stream its answer, provider, model and cost."""
    with api_client() as client:
        options: dict[str, Any] = {"model": model, "strategy": strategy, "max_tokens": max_tokens}
        if stream:
            for text in client.stream(prompt, **options):
                console.out(text, end="", highlight=False)
            console.out("")
            return
        accepted = client.submit(prompt, **options)
        if not wait:
            console.print(f"job {accepted['id']} {accepted['status']}  ({accepted['url']})")
            return
        job = client.wait(accepted["id"])
        if job["status"] != "succeeded":
            raise JobFailed(job)
        console.print(job["result"], highlight=False)
        usage = job["usage"]
        err.print(
            f"[dim]{job['id']} · {job['provider']}/{job['model']} · {usage['input_tokens']} in + "
            f"{usage['output_tokens']} out tokens · {usd(job['cost_usd'])} · {latency(job)}[/dim]"
        )


def jobs(
    limit: Annotated[int, typer.Option(help="How many of the latest jobs.")] = 20,
    status: Annotated[
        str | None, typer.Option(help="Only this status: queued, running, succeeded, ...")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List your latest jobs: a failed job shows its error (type and message)."""
    with api_client() as client:
        rows = client.jobs(limit=limit, status=status)
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"latest {len(rows)} jobs")
    for column in ("id", "status", "provider/model", "tokens in/out", "cost", "latency", "answer or error"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")
    for job in rows:
        usage = job["usage"]
        table.add_row(
            job["id"],
            job["status"],
            f"{job['provider'] or '-'}/{job['model'] or '-'}",
            f"{usage['input_tokens']}/{usage['output_tokens']}",
            usd(job["cost_usd"]),
            latency(job),
            error_text(job["error"]) if job["error"] else words(job["result"], 8),
        )
    console.print(table)


def latency(job: dict[str, Any]) -> str:
    """The answering call's latency, and submit-to-finish when it says more."""
    call, total = job.get("latency_ms"), job.get("total_latency_ms")
    if call is None and total is None:
        return "-"
    if call is None:
        return f"total {total:.0f} ms"
    if total is None:
        return f"{call:.0f} ms"
    return f"{call:.0f} ms (total {total:.0f} ms)"


def error_text(error: dict[str, Any], limit: int = ERROR_CHARS) -> str:
    """`type: message` in red, cut to `limit` characters at a word boundary."""
    text = " ".join(f"{error['type']}: {error.get('message') or ''}".split())
    if len(text) > limit:
        text = text[: limit - 3].rsplit(" ", 1)[0] + " ..."
    return f"[red]{escape(text)}[/red]"


def costs(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by",
            help="Group by key, model, provider, day, tag; comma-join to combine (model,day). "
            "Repeat for several tables. Default: model, then provider.",
        ),
    ] = None,
    since: Annotated[str | None, typer.Option(help="From this day or time (ISO, UTC), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this day or time (ISO, UTC), exclusive.")] = None,
    key: Annotated[list[str] | None, typer.Option(help="Admin keys: only this key id (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The API's reports as a JSON list.")] = False,
) -> None:
    """Spend from every provider call (GET /v1/spend): yours, or every key's for an admin key."""
    groupings = by or ["model", "provider"]
    with api_client() as client:
        reports = [client.spend(g.split(","), since=since, until=until, keys=key) for g in groupings]
    if as_json:
        console.out(json.dumps(reports, indent=2), highlight=False)
        return
    for report in reports:
        console.print(spend_table(report))
    total = reports[0]["total"]
    console.print(f"total: {total['calls']} calls in {total['jobs']} jobs, {usd(total['cost_usd'])}")


def spend_table(report: dict[str, Any]) -> Table:
    dims = report["group_by"]
    names = report.get("key_names") or {}
    scope = {"self": "your key", "all": "all keys"}.get(report["scope"], report["scope"])
    table = Table(title=f"spend by {', '.join(dims) or 'nothing'} ({scope})")
    for column in [*dims, "calls", "jobs", "input tokens", "output tokens", "cost"]:
        table.add_column(column, justify="left" if column in dims else "right")
    for row in report["data"]:
        values = [row["group"].get(d) for d in dims]
        cells = [
            f"{names.get(v, '')} {v}".strip() if d == "key" and v else (v or "-")
            for d, v in zip(dims, values, strict=True)
        ]
        table.add_row(
            *cells,
            str(row["calls"]),
            str(row["jobs"]),
            str(row["input_tokens"]),
            str(row["output_tokens"]),
            usd(row["cost_usd"]),
        )
    return table
