"""`llmqueue batch ...`: run a document batch with a live progress bar, list batches, read a
batch's status or results (as tables, or `--json` for scripts), or cancel it. The progress bar
and results table are also the demo's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmqueue.cli_jobs import JsonOpt, ModelOpt, StrategyOpt, api_client, console, print_json, usd, words
from llmqueue.client import Client

batch_app = typer.Typer(help="Document batches: one prompt over many documents.", no_args_is_help=True)
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")


def expand(paths: list[Path], param_hint: str = "PATHS") -> list[Path]:
    """Files as given; a directory contributes its text files (sorted). A bad path is an
    error naming `param_hint`, the option or argument the paths came from."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in TEXT_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise typer.BadParameter(f"{path} is not a file or directory", param_hint=param_hint)
    if not found:
        suffixes = ", ".join(TEXT_SUFFIXES)
        raise typer.BadParameter(f"no documents ({suffixes} files) found", param_hint=param_hint)
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
def status(batch_id: Annotated[str, typer.Argument(help="The batch id.")], as_json: JsonOpt = False) -> None:
    """Counts by status, tokens, cost so far and the ETA."""
    with api_client() as client:
        batch = client.batch(batch_id)
    if as_json:
        print_json(batch)
        return
    console.print(summary(batch))
    if batch["eta_s"] is not None and batch["status"] in ("in_progress", "cancelling"):
        console.print(f"ETA {batch['eta_s']:.0f} s")


@batch_app.command("results")
def results(
    batch_id: Annotated[str, typer.Argument(help="The batch id.")],
    format: Annotated[str, typer.Option("--format", "-f", help="table, jsonl or csv.")] = "table",
    as_json: JsonOpt = False,
) -> None:
    """Each document's result (so far), in input order; --json prints them as one JSON array.
    An embed-mode batch: its documents' chunks and cost (--format jsonl: every chunk's vector)."""
    if format not in ("table", "jsonl", "csv"):
        raise typer.BadParameter("choose table, jsonl or csv", param_hint="--format")
    if as_json and format != "table":
        raise typer.BadParameter(
            f"--json prints a JSON array; leave out --format {format}", param_hint="--json"
        )
    with api_client() as client:
        if as_json:
            print_json(list(client.batch_results(batch_id)))
            return
        if format == "csv":
            console.out(client.batch_results_csv(batch_id), end="", highlight=False)
            return
        if format == "table" and client.batch(batch_id).get("mode") == "embed":  # rows are vectors
            console.print(embed_documents_table(client.batch_documents(batch_id)))
            return
        rows = client.batch_results(batch_id)
        if format == "jsonl":
            for row in rows:
                console.out(json.dumps(row), highlight=False)
            return
        console.print(results_table(list(rows), title=f"results of {batch_id}"))


def embed_documents_table(docs: list[dict[str, Any]]) -> Table:
    """An embed-mode batch's documents: chunks, status, tokens and cost of each."""
    table = Table(title="documents")
    for column in ("document", "status", "chunks", "tokens", "cost"):
        table.add_column(column, justify="right" if column in ("chunks", "tokens", "cost") else "left")
    for doc in docs:
        table.add_row(
            escape(str(doc["document"])),
            doc["status"],
            str(doc["chunks"]),
            str(doc["input_tokens"]),
            usd(doc["cost_usd"]),
        )
    return table


@batch_app.command("list")
def list_batches(
    limit: Annotated[int, typer.Option(help="How many of the latest batches.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Your latest document batches, newest first."""
    with api_client() as client:
        rows = client.batches(limit=limit)
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"latest {len(rows)} document batches")
    for column in ("id", "status", "created", "done/total", "failed", "tokens in/out", "cost", "prompt"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")
    for batch in rows:
        counts = batch["counts"]
        table.add_row(
            batch["id"],
            batch["status"],
            str(batch.get("created_at") or "-")[:19].replace("T", " "),
            f"{counts['done']}/{counts['total']}",
            str(counts["failed"]),
            f"{batch['input_tokens']}/{batch['output_tokens']}",
            usd(batch["cost_usd"]),
            words(batch.get("prompt"), 8),
        )
    console.print(table)


@batch_app.command("cancel")
def cancel(batch_id: Annotated[str, typer.Argument(help="The batch id.")]) -> None:
    """Documents not yet sent never are; calls in flight finish."""
    with api_client() as client:
        batch = client.cancel_batch(batch_id)
    console.print(summary(batch))
