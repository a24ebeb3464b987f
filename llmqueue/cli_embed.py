"""`llmqueue embed FILES --model ...`: embed documents through llmqueue, with a progress bar.

The files (or the text files of a folder) go up as one document batch in embed mode: each is
cut into chunks of at most `--chunk-tokens` tokens overlapping by `--overlap`, and the chunks
are packed into as few provider calls as the model takes. The bar follows the calls; then the
chunks are written, in order, to `--out` as JSONL (`{document, chunk, start, end, text?,
embedding}`) and, with `--npy`, as a NumPy float32 matrix (row i: line i of the JSONL), and a
table gives each document's chunks and cost.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jobstore.embedding_results import npy_header
from llmqueue.cli_batch import embed_documents_table, expand, watch
from llmqueue.cli_jobs import api_client, console, err, usd
from llmqueue.client import Client, JsonDict


def embed(
    paths: Annotated[list[Path], typer.Argument(help="Text files, or folders of .txt/.md files.")],
    model: Annotated[str, typer.Option(help="An embedding model or deployment (GET /v1/models).")],
    chunk_tokens: Annotated[
        int | None, typer.Option(help="The most tokens a chunk has (default: 512, or the model's limit).")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option(help="Tokens a chunk repeats of the one before (default: an eighth).")
    ] = None,
    dimensions: Annotated[int | None, typer.Option(help="Shorter vectors, where the model can.")] = None,
    input_type: Annotated[
        str | None,
        typer.Option(help="search_document (retrieval), search_query, classification, clustering."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the chunks go, JSONL (default: <batch id>.jsonl).")
    ] = None,
    npy: Annotated[Path | None, typer.Option(help="Also write the vectors as a NumPy .npy matrix.")] = None,
    include_text: Annotated[bool, typer.Option(help="Write each chunk's text too.")] = False,
    max_cost_usd: Annotated[float | None, typer.Option(help="The most the whole batch may spend.")] = None,
) -> None:
    """Embed documents: chunk them, embed the chunks in as few provider calls as the model allows,
    and write the vectors with their document, chunk number and offsets."""
    documents = expand(paths)
    with api_client() as client:
        batch = client.embed_documents(
            documents,
            model=model,
            chunk_tokens=chunk_tokens,
            overlap_tokens=overlap,
            dimensions=dimensions,
            input_type=input_type,
            max_cost_usd=max_cost_usd,
        )
        options = batch["options"]
        console.print(
            f"{options['documents']} documents -> {options['chunks']} chunks of up to "
            f"{options['chunk_tokens']} tokens (overlap {options['overlap_tokens']}) -> "
            f"{options['calls']} provider calls to {escape(model)}, "
            f"about {usd(options['estimated_cost_usd'])}"
        )
        final = watch(client, batch["id"], console)
        target = out or Path(f"{batch['id']}.jsonl")
        written = write_chunks(client, final, target, npy, include_text)
        docs = client.batch_documents(batch["id"])
        console.print(embed_documents_table(docs))
        files = f"{target} and {npy}" if npy else str(target)
        calls = f"{final['counts']['succeeded']} of {options['calls']} calls succeeded"
        spent = f"{final['input_tokens']} tokens, total {usd(final['cost_usd'])}"
        console.print(f"{written} chunks -> {files}; {calls}; {spent}")
    failed = [d for d in docs if d["status"] != "succeeded"]
    if final["status"] != "completed" or failed:
        named = ", ".join(escape(d["document"]) for d in failed[:5])
        err.print(f"[red]{len(failed)} documents failed[/red]: {named}")
        raise typer.Exit(1)


def write_chunks(client: Client, batch: JsonDict, target: Path, npy: Path | None, include_text: bool) -> int:
    """Stream the batch's chunks to `target` (and `npy`), with a progress bar; returns how many."""
    options = batch["options"]
    total, dims = int(options["chunks"]), int(options["vector_dims"])
    matrix: IO[bytes] | None = npy.open("wb") if npy else None
    missing = struct.pack(f"<{dims}f", *([math.nan] * dims))
    written = 0
    try:
        if matrix is not None:
            matrix.write(npy_header(total, dims))
        with target.open("w", encoding="utf-8") as lines, progress() as bar:
            task = bar.add_task("writing chunks", total=total)
            for row in client.embedding_results(batch["id"], include_text=include_text):
                lines.write(json.dumps(row) + "\n")
                if row.get("chunk") is None:  # a document refused at intake: no chunk, no row
                    continue
                if matrix is not None:
                    vector: list[float] | None = row.get("embedding")
                    matrix.write(struct.pack(f"<{dims}f", *vector) if vector else missing)
                written += 1
                bar.advance(task)
    finally:
        if matrix is not None:
            matrix.close()
    return written


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
