"""`llmqueue batch ...`: run a document batch with a live progress bar, and read its status,
results, or cancel it. The progress bar and results table are also the demo's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmqueue.cli_jobs import ModelOpt, StrategyOpt, api_client, console, usd, words
from llmqueue.client import Client

batch_app = typer.Typer(help="Document batches: one prompt over many documents.", no_args_is_help=True)
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; a directory contributes its text files (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in TEXT_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise typer.BadParameter(f"{path} is not a file or directory", param_hint="PATHS")
    if not found:
        raise typer.BadParameter("no documents found", param_hint="PATHS")
    return found


def progress_bar(target: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]failed {task.fields[failed]}[/red]"),
        TextColumn("{task.fields[cost]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        console=target,
    )


def watch(client: Client, batch_id: str, target: Console = console, poll_s: float = 0.5) -> dict[str, Any]:
    """A live progress bar (done, failed, cost, ETA) until the batch ends; returns its last state."""
    with progress_bar(target) as bar:
        task = bar.add_task(batch_id[:18], total=None, failed=0, cost=usd(0), eta="-")

        def show(batch: dict[str, Any]) -> None:
            counts = batch["counts"]
            eta = batch["eta_s"]
            bar.update(
                task,
                total=counts["total"],
                completed=counts["done"],
                failed=counts["failed"],
                cost=usd(batch["cost_usd"]),
                eta=f"{eta:.0f}s" if eta is not None else "-",
                description=f"{batch_id[:18]} {batch['status']}",
            )

        return client.wait_batch(batch_id, on_progress=show, poll_s=poll_s)


def results_table(rows: list[dict[str, Any]], title: str = "results") -> Table:
    table = Table(title=title)
    for column in ("document", "status", "provider", "model", "tokens in/out", "cost", "latency", "answer"):
        table.add_column(column, overflow="ellipsis", no_wrap=column != "answer")
    for row in rows:
        answer = words(row["result"]) if row["result"] else words((row["error"] or {}).get("message"), 30)
        latency = f"{row['latency_ms']:.0f} ms" if row["latency_ms"] else "-"
        table.add_row(
            escape(str(row["id"])),
            row["status"],
            row["provider"] or "-",
            row["model"] or "-",
            f"{row['input_tokens']}/{row['output_tokens']}",
            usd(row["cost_usd"]),
            latency,
            answer,
        )
    return table


def summary(batch: dict[str, Any]) -> str:
    counts = batch["counts"]
    return (
        f"batch {batch['id']} {batch['status']}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['cancelled']} cancelled of {counts['total']}; {batch['input_tokens']} in + "
        f"{batch['output_tokens']} out tokens; total cost {usd(batch['cost_usd'])}"
        + (f"; {paths['provider_batch']} by provider batch" if (paths := batch.get("jobs_by_path")) else "")
    )


@batch_app.command("run")
def run(
    paths: Annotated[list[Path], typer.Argument(help="Text files (UTF-8) or directories of them.")],
    prompt: Annotated[str, typer.Option(help="The template; {document} is replaced by each document.")],
    model: ModelOpt = None,
    strategy: StrategyOpt = None,
    max_tokens: Annotated[int | None, typer.Option(help="Cap on each answer's tokens.")] = None,
    on_too_long: Annotated[str, typer.Option(help="split (map, then reduce) or reject.")] = "split",
    webhook_url: Annotated[str | None, typer.Option(help="POSTed once when the batch ends.")] = None,
    deadline_s: Annotated[
        float | None, typer.Option(help="Give up on a document this long after submit.")
    ] = None,
    delivery: Annotated[
        str,
        typer.Option(
            help="Economy mode: auto (by provider batch, at about half price, when --deadline-s "
            "allows it and it saves enough), economy (wherever it saves anything) or online."
        ),
    ] = "auto",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Show progress, then the results.")] = False,
) -> None:
    """Submit documents as one batch; with --wait, a live progress bar and a results table."""
    documents = expand(paths)
    with api_client() as client:
        batch = client.submit_documents(
            documents,
            prompt=prompt,
            model=model,
            strategy=strategy,
            max_tokens=max_tokens,
            on_too_long=on_too_long,
            webhook_url=webhook_url,
            deadline_s=deadline_s,
            delivery=delivery,
        )
        console.print(f"batch {batch['id']}: {batch['counts']['total']} documents accepted")
        if not wait:
            return
        final = watch(client, batch["id"])
        console.print(results_table(list(client.batch_results(batch["id"]))))
        console.print(summary(final))


@batch_app.command("status")
def status(batch_id: Annotated[str, typer.Argument(help="The batch id.")]) -> None:
    """Counts by status, tokens, cost so far and the ETA."""
    with api_client() as client:
        batch = client.batch(batch_id)
    console.print(summary(batch))
    if batch["eta_s"] is not None and batch["status"] in ("in_progress", "cancelling"):
        console.print(f"ETA {batch['eta_s']:.0f} s")


@batch_app.command("results")
def results(
    batch_id: Annotated[str, typer.Argument(help="The batch id.")],
    format: Annotated[str, typer.Option("--format", "-f", help="table, jsonl or csv.")] = "table",
) -> None:
    """Each document's result (so far), in input order."""
    if format not in ("table", "jsonl", "csv"):
        raise typer.BadParameter("choose table, jsonl or csv", param_hint="--format")
    with api_client() as client:
        if format == "csv":
            console.out(client.batch_results_csv(batch_id), end="", highlight=False)
            return
        rows = client.batch_results(batch_id)
        if format == "jsonl":
            for row in rows:
                console.out(json.dumps(row), highlight=False)
            return
        console.print(results_table(list(rows), title=f"results of {batch_id}"))


@batch_app.command("cancel")
def cancel(batch_id: Annotated[str, typer.Argument(help="The batch id.")]) -> None:
    """Documents not yet sent never are; calls in flight finish."""
    with api_client() as client:
        batch = client.cancel_batch(batch_id)
    console.print(summary(batch))
