"""`llmqueue demo`: the whole pipeline on one machine, through the document-batch path.

With no DATABASE_URL it runs embedded: SQLite and kombu's SQLAlchemy transport as the broker
(real Celery messages, no server), in a folder made for the run (`demo_files.demo_home`:
under LLMQUEUE_HOME when set, else a temporary one removed at the end). With
DATABASE_URL / CELERY_BROKER_URL / REDIS_URL set, it uses those. Without provider keys the
built-in emulator answers (and the demo says so); with OPENAI_API_KEY set, OpenAI answers.

It migrates the schema, creates an API key, serves the API on a thread (uvicorn), starts
one real Celery worker process, submits the sample documents as one batch with a
summarise prompt, shows a live progress bar, then a results table and the total cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.panel import Panel

from llmqueue.cli_batch import expand, results_table, summary, watch
from llmqueue.cli_jobs import console
from llmqueue.demo_files import demo_home

PROMPT = "{document}\n\nSummarise the document above in two sentences for a busy reader."
MODEL = "gpt-4o-mini"
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "CO_API_KEY", "MISTRAL_API_KEY")


def prepare_environment(latency_ms: float) -> Any:
    """Set the env before any settings are read (LLMQUEUE_HOME is `demo_home`'s); start the
    emulator when no key is set."""
    emulator = None
    if not os.environ.get("OPENAI_API_KEY"):
        from emulator.server import EmulatorThread

        emulator = EmulatorThread().start()
        os.environ["LLMQUEUE_EMULATOR_URL"] = emulator.url
        os.environ.setdefault("LLMQUEUE_EMULATOR_MODE", "auto")
        httpx.post(
            f"{emulator.url}/_emulator/config", json={"scopes": {"*": {"latency_ms": latency_ms}}}
        ).raise_for_status()
    from core.settings import get_settings

    get_settings.cache_clear()
    return emulator


def announce(emulator: Any) -> None:
    from core.settings import get_settings

    settings = get_settings()
    where = (
        "embedded: SQLite and the SQLAlchemy broker under " + str(settings.home.resolve())
        if settings.embedded
        else "the configured DATABASE_URL and broker"
    )
    console.print(f"[bold]llmqueue demo[/bold] — job store and queue: {where}")
    if emulator is not None:
        console.print(
            Panel(
                f"No provider API keys are set ({', '.join(PROVIDER_KEYS)}), so the BUILT-IN EMULATOR at "
                f"{emulator.url} answers every call: summaries below are emulated, costs are computed from "
                "real list prices. Set OPENAI_API_KEY to use OpenAI for real.",
                title="provider emulator",
                style="yellow",
            )
        )
    else:
        console.print("OPENAI_API_KEY is set: OpenAI answers (real calls, real cost).")


@contextmanager
def api_server() -> Iterator[str]:
    import uvicorn

    from api.main import create_app
    from emulator.server import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the API did not start within 20 s")
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def worker_process() -> Iterator[subprocess.Popen[str]]:
    """One real Celery worker (`llmqueue worker -Q all -c 8`) in a child process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmqueue.cli", "worker", "-Q", "all", "-c", "8", "--loglevel", "INFO"],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            if " ready." in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(40):
            raise RuntimeError("the worker did not start:\n" + "".join(log[-30:]))
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_demo(docs: str, latency_ms: float) -> int:
    documents = expand([Path(docs)], param_hint="--docs")
    with demo_home():  # the job store and broker files: removed at the end unless under LLMQUEUE_HOME
        return _run(docs, documents, latency_ms)


def _run(docs: str, documents: list[Path], latency_ms: float) -> int:
    emulator = prepare_environment(latency_ms)
    try:
        announce(emulator)
        from jobstore.db import transaction
        from jobstore.jobs import create_api_key
        from jobstore.migrate import upgrade
        from llmqueue.client import Client

        upgrade()
        with transaction() as session:
            _, secret = create_api_key(session, "demo")
        started = time.monotonic()
        with api_server() as url, worker_process(), Client(base_url=url, api_key=secret) as client:
            batch = client.submit_documents(documents, prompt=PROMPT, model=MODEL, max_tokens=200)
            console.print(f"submitted {len(documents)} documents from {docs}/ as batch {batch['id']}")
            final = watch(client, batch["id"], console, poll_s=0.25)
            console.print(results_table(list(client.batch_results(batch["id"])), title="summaries"))
            console.print(summary(final))
        console.print(f"done in {time.monotonic() - started:.1f} s")
        return 0 if final["status"] == "completed" and final["counts"]["succeeded"] == len(documents) else 1
    finally:
        if emulator is not None:
            emulator.stop()
