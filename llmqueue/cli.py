"""The `llmqueue` command: run the services, manage keys, and the demo.

Service commands (`migrate`, `api`, `worker`, `emulator`) are what docker-compose and
Flower's users run; `demo` runs the whole pipeline embedded on one machine.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from llmqueue import cli_batch, cli_embed, cli_jobs, cli_keys
from workers.queues import ALL_QUEUES

app = typer.Typer(
    help="llmqueue: asynchronous, durable LLM jobs routed across providers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(cli_keys.keys_app, name="keys")
app.add_typer(cli_batch.batch_app, name="batch")
app.command()(cli_jobs.submit)
app.command()(cli_jobs.jobs)
app.command()(cli_jobs.costs)
app.command()(cli_embed.embed)
console = Console()
POOL_THREADS = 8
err = Console(stderr=True)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@app.command()
def migrate() -> None:
    """Create or upgrade the job store's schema (Alembic) at DATABASE_URL."""
    from core.settings import get_settings
    from jobstore.migrate import upgrade

    upgrade()
    console.print(f"schema is at head on {_redact(get_settings().sqlalchemy_url)}")


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


@app.command()
def worker(
    queues: Annotated[
        str,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated queues: dispatch, provider.openai, provider.anthropic, ... or 'all'.",
        ),
    ] = "all",
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-c",
            help="Provider calls in flight per process (on one event loop); "
            "a dispatcher routes with up to this many threads (at most 8).",
        ),
    ] = 200,
    name: Annotated[
        str | None,
        typer.Option(
            help="Celery node name; default: named after the queues, e.g. dispatch@host, openai@host."
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "WARNING",
) -> None:
    """Run a Celery worker for the dispatcher and/or provider queues (thread pool)."""
    chosen = list(ALL_QUEUES) if queues == "all" else [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in chosen if q not in ALL_QUEUES]
    if unknown:
        _fail(f"unknown queue(s) {unknown}; choose from: {', '.join(ALL_QUEUES)} (or 'all')")
    os.environ["LLMQUEUE_MAX_IN_FLIGHT"] = str(concurrency)  # the engine's room (workers/engine.py)
    from core.providers import UnknownProvider
    from core.settings import get_settings
    from routing.catalog import CatalogError, get_catalog

    get_settings.cache_clear()
    from workers.celery_app import app as celery_app
    from workers.providers import AdapterMissing, load_adapters

    try:  # a bad catalog or a provider without an adapter stops the start, named
        get_catalog()
        load_adapters(q.removeprefix("provider.") for q in chosen if q.startswith("provider."))
    except (CatalogError, UnknownProvider, AdapterMissing) as exc:
        _fail(str(exc))

    argv = [
        "worker",
        "-Q",
        ",".join(chosen),
        "-P",
        "threads",
        "-c",
        # Threads that take messages: each waits while the engine is full, so a few suffice.
        str(max(1, min(concurrency, POOL_THREADS))),
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    argv += ["-n", name or node_name(chosen)]
    code = run_celery_worker(celery_app, argv)
    if code:  # an unrecoverable error (the broker lost for good): non-zero, so a supervisor restarts it
        raise SystemExit(code)


def run_celery_worker(celery_app: Any, argv: list[str]) -> int:
    """Run the Celery worker; its exit code. Celery's `worker_main` drops the code its worker
    sets (1 after an "Unrecoverable error"), so a process that could not go on would exit 0
    and a restart-on-failure supervisor would leave it dead: the worker is caught at init."""
    from celery import signals

    controllers: list[Any] = []

    def remember(sender: Any, **_: Any) -> None:
        controllers.append(sender)

    signals.worker_init.connect(remember, weak=False)
    try:
        celery_app.worker_main(argv)
    finally:
        signals.worker_init.disconnect(remember)
    code = controllers[-1].exitcode if controllers else None
    return int(code or 0)


def node_name(queues: list[str]) -> str:
    """A worker's default Celery node name, from what it serves: `dispatch@%h`, `openai@%h`,
    `dispatch-openai@%h`, `all@%h` (Celery fills in the host), so Flower tells workers apart."""
    if set(queues) == set(ALL_QUEUES):
        return "all@%h"
    return "-".join(q.removeprefix("provider.") for q in queues) + "@%h"


@app.command()
def emulator(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
) -> None:
    """Run the provider emulator (OpenAI, Anthropic, Gemini, ... wire formats)."""
    from emulator.server import serve

    console.print(f"provider emulator on http://{host}:{port} (control: /_emulator/config)")
    serve(host, port)


@app.command()
def demo(
    docs: Annotated[
        str | None,
        typer.Option(help="Folder of .txt/.md documents to summarise [default: the shipped samples]."),
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="Emulated provider latency.")] = 400,
) -> None:
    """Summarise the sample documents through the whole pipeline, embedded: no services needed."""
    from llmqueue.client import LlmqueueError
    from llmqueue.demo import run_demo
    from llmqueue.demo_files import sample_documents
    from routing.catalog import CatalogError

    try:
        code = run_demo(docs or str(sample_documents()), latency_ms)
    except CatalogError as exc:  # LLMQUEUE_CATALOG names a bad file: say which and what, no traceback
        _fail(f"{exc} (fix the file LLMQUEUE_CATALOG names, or unset it)")
    except LlmqueueError as exc:  # the API refused the batch: nothing in the catalog can serve it
        _fail(f"{exc} (check the models LLMQUEUE_CATALOG names and the documents in --docs)")
    sys.exit(code)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    from core.settings import SettingsError

    try:
        app()
    except SettingsError as exc:  # a bad environment variable: name it, no traceback
        err.print(f"[red]error:[/red] {exc} (fix the environment variable)")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
